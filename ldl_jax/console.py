"""What a run shows on the console, and its full log in the workdir.

The console gets ldl_jax's own messages, every warning and error, one progress line per phase
(training, evaluation, image decoding: a live tqdm line on a terminal, else a plain line every
`PLAIN_INTERVAL_S` seconds so that logs and CI stay readable), evaluation tables and a summary.
Everything logged, the libraries' INFO chatter included (orbax, TensorStore, JAX, CLU's
parameter overview and metric lines, TensorFlow's C++ banners), goes to the run's log file
(`WORKDIR/train.log`); `setup(verbose_logs=True)` shows it on the console too.

Only the command line calls `setup`: imported as a library (the tests, a notebook), ldl_jax
draws no progress lines and leaves logging as its caller set it up.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import NoReturn

import tqdm
from absl import logging as absl_logging

PLAIN_INTERVAL_S = 30.0  # a plain progress line at most this often
FILE_ONLY = "ldl_jax.console"  # a logger whose records go to the log file only
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
# A C++ INFO line (absl's format: I, month, day) or absl's notice printed before the first one.
_NATIVE_INFO = re.compile(r"^I\d{4} |^WARNING: All log messages before absl::InitializeLog")
_PLAIN_FORMAT = (
    "{desc}: {n_fmt}/{total_fmt} {unit} {percentage:3.0f}% "
    "[{elapsed}<{remaining}, {scaled_rate}{postfix}]"
)
_LIVE_FORMAT = _PLAIN_FORMAT.replace("% [", "% {bar} [")


class _Console:
    """What `setup` set: whether it ran, where progress lines go (None: nowhere), live or not."""

    active = False
    progress_stream = None
    live = False
    native_load_output = ""  # what C++ libraries printed while loading (`native_load_held`)


_console = _Console()


@contextlib.contextmanager
def native_load_held():
    """Holds what C++ libraries write to stderr (file descriptor 2) in the block for `setup`.

    TensorFlow prints INFO banners from C++ as it loads ("oneDNN custom operations are on"),
    whatever TF_CPP_MIN_LOG_LEVEL says: wrap the imports that load it. If the block raises,
    what was held is written to stderr at once.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            _stop_holding(saved, held)
            sys.stderr.write(_console.native_load_output)
            raise
        _stop_holding(saved, held)


def _stop_holding(saved_stderr: int, held) -> None:
    sys.stderr.flush()
    os.dup2(saved_stderr, 2)
    os.close(saved_stderr)
    held.seek(0)
    _console.native_load_output += held.read().decode(errors="replace")


class _RunLog(logging.Handler):
    """Writes every record to the run's log file; holds them until `open_log_file` names it.

    The workdir is written only once the images have decoded (a bad image leaves it as it
    was), so the records of validation, decoding and restoring wait here until then.
    """

    def __init__(self):
        super().__init__()
        self.pending: list[str] = []
        self.file = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self.file is None:
                self.pending.append(line)
            else:
                self.file.write(line)
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)

    def open(self, path) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
            self.file = open(path, "a", buffering=1, encoding="utf-8")
            self.file.writelines(self.pending)
            self.pending = []

    def close(self) -> None:
        with self.lock:
            if self.file is not None:
                self.file.close()
                self.file = None
        super().close()


class _ConsoleHandler(logging.Handler):
    """Writes records to stderr above any live progress line (`tqdm.write`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging's own convention
            self.handleError(record)


class _ShortFormatter(logging.Formatter):
    """The message alone; `WARNING: `, `ERROR: ` before those (a failed run's last line, from
    `ldl_jax.main`, is the one that starts with `error: `)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname}: {text}"
        return text


def _ours_or_serious(record: logging.LogRecord) -> bool:
    """The quiet console's filter: warnings and errors, and ldl_jax's own INFO messages.

    Libraries log through absl too (orbax, CLU), so "ours" is told by the calling file.
    """
    if record.name == FILE_ONLY:
        return False
    if record.levelno >= logging.WARNING:
        return True
    return record.name == "absl" and record.pathname.startswith(_PACKAGE_DIR)


def setup(verbose_logs: bool = False) -> None:
    """Routes the logs of a command-line run: all of them to the run log, the quiet selection
    (or with `verbose_logs` all of them) to the console; turns progress lines on.

    Call after absl parsed the flags (its --verbosity sets what is logged at all), before
    anything else logs.

    Args:
      verbose_logs: show every library's log lines on the console, as absl would.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler is absl_logging.get_absl_handler() or isinstance(handler, _ConsoleHandler):
            root.removeHandler(handler)
    run_log = _run_log()
    if run_log is None:
        run_log = _RunLog()
        run_log.setFormatter(absl_logging.PythonFormatter())
        root.addHandler(run_log)
    console = _ConsoleHandler()
    if verbose_logs:
        console.setFormatter(absl_logging.PythonFormatter())
        console.addFilter(lambda record: record.name != FILE_ONLY)
    else:
        console.setFormatter(_ShortFormatter())
        console.addFilter(_ours_or_serious)
    root.addHandler(console)
    logging.captureWarnings(True)

    native = logging.getLogger("native")  # what C++ libraries printed while loading
    for line in _console.native_load_output.splitlines():
        native.log(logging.INFO if _NATIVE_INFO.match(line) else logging.WARNING, "%s", line)
    _console.native_load_output = ""

    _console.active = True
    show_progress(True)


def show_progress(enabled: bool) -> None:
    """Turns progress lines and results on or off (off on all processes of a multi-host run
    but one); `setup` turns them on."""
    _console.progress_stream = sys.stderr if enabled else None
    _console.live = enabled and sys.stderr.isatty()


def _run_log() -> _RunLog | None:
    return next((h for h in logging.getLogger().handlers if isinstance(h, _RunLog)), None)


def open_log_file(path) -> None:
    """Writes the run log, from its first line on, to `path` (appending): a no-op unless
    `setup` ran."""
    run_log = _run_log()
    if run_log is not None:
        run_log.open(path)


def show(text: str) -> None:
    """Prints `text` (a result, a table) on stdout above any live progress line, and logs it
    to the run log. A no-op unless `setup` ran (a library caller reads the returned results);
    only logged where progress is off (the other processes of a multi-host run)."""
    if not _console.active:
        return
    log_only(text)
    if _console.progress_stream is not None:
        tqdm.tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()


def shown_path(path) -> str:
    """`path` relative to the working directory where it lies below it, as people typed it."""
    path = pathlib.Path(path)
    try:
        return str(path.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(path)


def log_only(text: str, error: bool = False) -> None:
    """Logs `text` (at ERROR if `error`, else INFO) to the run log, not to the console; a
    no-op unless `setup` ran."""
    if _console.active:
        logging.getLogger(FILE_ONLY).log(logging.ERROR if error else logging.INFO, "%s", text)


# What a tool's user got wrong (a missing file or checkpoint, an output that exists, a bad flag
# value): `input_errors_end_the_command` turns these into one line and exit code 2.
INPUT_ERRORS = (FileNotFoundError, FileExistsError, ValueError)


@contextlib.contextmanager
def input_errors_end_the_command(errors: tuple[type[BaseException], ...] = INPUT_ERRORS):
    """Ends a command-line tool with `error: MESSAGE` on stderr and exit code 2, not a
    traceback, when one of `errors` escapes the block; logged to the run log where there is one.

    `--verbosity=1` keeps the traceback, for a bug report.
    """
    try:
        yield
    except errors as error:
        if absl_logging.get_verbosity() >= absl_logging.DEBUG:
            raise
        fail(error, 2)


def fail(error, code: int) -> NoReturn:
    """Ends the command: `error: ERROR` on stderr (and in the run log), exit code `code`."""
    log_only(f"{error}", error=True)
    sys.stderr.write(f"error: {error}\n")  # one write: background threads may log meanwhile
    sys.exit(code)


def table(rows: dict[str, dict[str, str]]) -> str:
    """A small text table: one row per key of `rows`, columns in the first row's order."""
    columns = list(next(iter(rows.values())))
    cells = [["", *columns]] + [[name, *(row[c] for c in columns)] for name, row in rows.items()]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = []
    for name, *values in cells:
        padded = [name.ljust(widths[0])]
        padded += [value.rjust(w) for value, w in zip(values, widths[1:], strict=True)]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def duration(seconds: float) -> str:
    """'1h 02m', '3m 44s' or '12s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def _scaled_rate(rate: float | None, scale: float, unit: str) -> str:
    if not rate:
        return f"? {unit}/s"
    rate *= scale
    return f"{rate:.0f} {unit}/s" if rate >= 10 else f"{rate:.2f} {unit}/s"


def _line_size(stream) -> dict:
    """tqdm's size arguments: follow the terminal's width, or 100 columns where it reports
    none (the pseudo-terminal of `script`, some CI runners: tqdm would draw nothing)."""
    try:
        known = os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        known = False
    return {"dynamic_ncols": True} if known else {"ncols": 100, "nrows": 20}


class _LiveLine(tqdm.tqdm):
    """tqdm with `{scaled_rate}`: the rate in the unit people count (images for steps)."""

    def __init__(self, *args, scale: float, scaled_unit: str, **kwargs):
        self.scale, self.scaled_unit = scale, scaled_unit
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self):
        values = super().format_dict
        rate = values["rate"]
        if rate is None and values["elapsed"]:
            rate = (values["n"] - values["initial"]) / values["elapsed"]
        values["scaled_rate"] = _scaled_rate(rate, self.scale, self.scaled_unit)
        return values


class Progress:
    """One phase's progress line: count/total, rate, ETA and a few values (e.g. the loss).

    On a terminal a live tqdm line; otherwise a plain line at most every `PLAIN_INTERVAL_S`
    seconds, and one at the end if `leave`. Silent unless `setup` ran with progress on.

    Args:
      desc: what is counted, e.g. 'train' or 'eval val'.
      total: the count at the end.
      unit: what one `update` counts, e.g. 'step'.
      initial: the count at the start (a resumed run's step).
      scale, scaled_unit: the rate is shown in `scaled_unit`/s, `scale` of them per `unit`
        (e.g. batch_size images per step); by default in `unit`/s.
      leave: keep the line (a final plain line) when done.
    """

    def __init__(
        self,
        desc: str,
        total: int,
        *,
        unit: str,
        initial: int = 0,
        scale: float = 1,
        scaled_unit: str | None = None,
        leave: bool = True,
    ):
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.scale, self.scaled_unit, self.leave = scale, scaled_unit or unit, leave
        self.values: dict[str, str] = {}
        self._stream = _console.progress_stream
        self._line = None
        if self._stream is not None and _console.live:
            self._line = _LiveLine(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                file=self._stream,
                leave=leave,
                **_line_size(self._stream),
                bar_format=_LIVE_FORMAT,
                scale=scale,
                scaled_unit=self.scaled_unit,
            )
        self._start = self._last_time = time.monotonic()
        self._start_n = self._last_n = initial

    def update(self, count: int = 1) -> None:
        self.n += count
        if self._line is not None:
            self._line.update(count)
        elif self._stream is not None and self.n - count == self._start_n:
            # A plain line's rate counts from the first update on: the first step compiles.
            self._last_time, self._last_n = time.monotonic(), self.n
        elif self._stream is not None and time.monotonic() - self._last_time >= PLAIN_INTERVAL_S:
            self._print_plain()

    def iterate(self, items: Iterable) -> Iterator:
        """Yields `items`, counting one per item taken."""
        for item in items:
            yield item
            self.update()

    def set(self, **values) -> None:
        """Values shown after the rate, e.g. `set(loss='1.234')`, until set again."""
        self.values.update(values)
        if self._line is not None:
            self._line.set_postfix_str(self._postfix(), refresh=False)

    def close(self) -> None:
        """Ends the line; the run log gets its final state (count, time, mean rate)."""
        if self._stream is None:
            return
        final = self._plain_line(self._start_n, self._start)
        if self._line is not None:
            self._line.close()
        elif self.leave and self._last_n != self.n:
            tqdm.tqdm.write(final, file=self._stream)
        log_only(final)
        self._stream = None

    def _postfix(self) -> str:
        return ", ".join(f"{name} {value}" for name, value in self.values.items())

    def _print_plain(self) -> None:
        line = self._plain_line(self._last_n, self._last_time)
        tqdm.tqdm.write(line, file=self._stream)
        self._stream.flush()
        self._last_time, self._last_n = time.monotonic(), self.n

    def _plain_line(self, since_n: int, since: float) -> str:
        """The state as a plain line, with the rate since (`since_n`, `since`)."""
        now = time.monotonic()
        rate = (self.n - since_n) / (now - since) if now > since else None
        return tqdm.tqdm.format_meter(
            self.n,
            self.total,
            now - self._start,
            prefix=self.desc,
            unit=self.unit,
            rate=rate,
            bar_format=_PLAIN_FORMAT,
            postfix=self._postfix(),
            initial=self._start_n,
            scaled_rate=_scaled_rate(rate, self.scale, self.scaled_unit),
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
