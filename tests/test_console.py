"""The console of a command-line run: progress, results and a summary, without the libraries'
chatter, which goes with everything else to WORKDIR/train.log; progress drawn live on a terminal
and as plain lines elsewhere."""

import io
import json
import re
import sys
import time

import pytest

from ldl_jax import console, train
from tests.helpers import trainer_cli

# Lines of the libraries' INFO logs, the parameter table and TensorFlow's load-time banner.
CHATTER = (
    "checkpoint_manager.py",
    "ocdbt",
    "Queuing deletion",
    "parameter_overview.py",
    "| Name",
    "logging_writer.py",
    "xla_bridge.py",
    "oneDNN",
)


@pytest.fixture(scope="module")
def tiny_run(synthetic_dir, tmp_path_factory):
    """The trainer's command on the tiny config (2 steps), its output not a terminal."""
    root = tmp_path_factory.mktemp("console")
    done = trainer_cli.run(root, synthetic_dir, root / "run")
    assert done.returncode == 0, done.stderr[-3000:]
    return done, root / "run"


@pytest.mark.slow
def test_the_console_shows_progress_results_and_a_summary_without_library_chatter(tiny_run):
    done, workdir = tiny_run
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) < 25, "\n".join(lines)
    assert [line for line in lines if any(word in line for word in CHATTER)] == []
    assert re.search(r"^train: 2/2 step 100% \[.*img/s, loss \d+\.\d+\]$", done.stderr, re.M)
    results = json.loads((workdir / train.EVAL_RESULTS_FILE).read_text())
    test_row = f"test {100 * results['test']['accuracy']:.1f}%"
    assert re.search(r"^ +accuracy +balanced +images +step$", done.stdout, re.M)
    assert test_row in [" ".join(line.split()[:2]) for line in done.stdout.splitlines()]
    assert f"Outputs in {console.shown_path(workdir)}: {train.EVAL_RESULTS_FILE}" in done.stdout


@pytest.mark.slow
def test_train_log_holds_the_full_log_from_the_first_line(tiny_run):
    done, workdir = tiny_run
    log = (workdir / "train.log").read_text()
    first_console_line = done.stderr.splitlines()[0]  # logged before the workdir existed
    assert first_console_line.startswith("JAX process 0 / 1")
    assert f"] {first_console_line}" in log
    for word in ("parameter_overview.py", "| Name", "Total:", "checkpoint_manager.py"):
        assert word in log, word
    assert "] train: 2/2 step 100%" in log  # the progress line's final state
    assert "] Done in " in log


@pytest.fixture
def progress_to(monkeypatch):
    """Routes progress lines to a stream standing in for stderr, as `console.setup` does."""

    def route(stream):
        monkeypatch.setattr(sys, "stderr", stream)
        for name in ("progress_stream", "live"):  # restored after the test
            monkeypatch.setattr(console._console, name, getattr(console._console, name))
        console.show_progress(True)

    return route


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_one_line_redrawn_with_rate_eta_and_loss(progress_to):
    terminal = _Terminal()
    progress_to(terminal)
    with console.Progress("train", 4, unit="step", scale=8, scaled_unit="img") as progress:
        for _ in range(4):
            progress.update()
            progress.set(loss="1.500")
    drawn = terminal.getvalue()
    assert drawn.count("\n") == 1 and drawn.count("\r") >= 2  # one line, redrawn in place
    final = drawn.split("\r")[-1].strip()
    assert re.fullmatch(r"train: 4/4 step 100% \S+ \[00:00<00:00, \d+ img/s, loss 1\.500\]", final)


def test_elsewhere_progress_is_plain_lines_whose_rate_leaves_out_the_first_step(
    progress_to, monkeypatch
):
    monkeypatch.setattr(console, "PLAIN_INTERVAL_S", 0.0)  # a line at every update
    log = io.StringIO()
    progress_to(log)
    with console.Progress("eval val", 4, unit="batch", initial=1) as progress:
        time.sleep(1.0)  # the first step, compiling
        for _ in range(3):
            progress.update()
    assert "\r" not in log.getvalue()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2, lines  # none after the first step: its rate would say little
    for line, count, percent in zip(lines, (3, 4), (75, 100), strict=True):
        expected = rf"eval val: {count}/4 batch +{percent}% \[\d\d:\d\d<00:00, ([\d.]+) batch/s\]"
        match = re.fullmatch(expected, line)
        assert match and float(match.group(1)) > 5, line  # with the first step: < 3 batch/s
