"""One training run per workdir: a lock file naming its host and process, with a heartbeat.

Two runs writing the same checkpoints corrupt each other. `hold(workdir)` creates
`WORKDIR/lock.json` atomically ({"host", "pid", "started", ...}); a second run refuses to start
with a message naming the first run's host and pid. A lock left by a killed run is stale and is
taken over: on the same host when its process no longer exists, on any host when its heartbeat
(the file's modification time, refreshed every `HEARTBEAT_SECONDS` while the run lives) is
older than `STALE_SECONDS`.
"""

import contextlib
import datetime
import json
import os
import pathlib
import socket
import threading
import time

from absl import logging

LOCK_FILE = "lock.json"
HEARTBEAT_SECONDS = 60.0
STALE_SECONDS = 600.0


class WorkdirLockedError(RuntimeError):
    """Another live run holds the workdir."""


class WorkdirNotWritableError(RuntimeError):
    """The workdir or its lock file cannot be created or written (permissions, a full disk)."""


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stale_reason(path: pathlib.Path, holder: dict, stale_seconds: float) -> str | None:
    """Why the lock at `path` no longer protects a live run, or None if it may."""
    age = time.time() - path.stat().st_mtime
    if holder.get("host") == socket.gethostname() and not _process_alive(int(holder["pid"])):
        return f"process {holder['pid']} on this host has ended"
    if age > stale_seconds:
        return f"its heartbeat is {age:.0f} s old"
    return None


def _read_holder(path: pathlib.Path) -> dict:
    try:
        holder = json.loads(path.read_text())
        if not isinstance(holder, dict) or "pid" not in holder:
            raise ValueError
        return holder
    except (OSError, ValueError):
        return {"host": "unknown", "pid": -1}  # unreadable: a half-written lock


def _create(path: pathlib.Path, record: dict) -> bool:
    """Creates `path` holding `record`; False if it exists. A failed write removes the file
    again, so a full disk leaves no empty lock behind."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump(record, file)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return True


def acquire(workdir, stale_seconds: float = STALE_SECONDS) -> pathlib.Path:
    """Creates the lock file of `workdir` (and the workdir).

    Raises:
      WorkdirLockedError: a live run holds the workdir.
      WorkdirNotWritableError: the workdir or the lock file cannot be written.
    """
    workdir = pathlib.Path(workdir)
    path = workdir / LOCK_FILE
    record = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # a second try after removing a stale lock
            if _create(path, record):
                return path
            holder = _read_holder(path)
            reason = _stale_reason(path, holder, stale_seconds)
            if reason is None:
                raise WorkdirLockedError(
                    f"{workdir} is in use by another run (host {holder.get('host')}, pid "
                    f"{holder.get('pid')}, started {holder.get('started', '?')}); wait for it, "
                    f"use another --workdir, or delete {path} if that run is dead"
                )
            logging.warning("Taking over the stale lock %s (%s): %s", path, reason, holder)
            path.unlink(missing_ok=True)
    except OSError as error:
        raise WorkdirNotWritableError(
            f"cannot write to the workdir {workdir}: {error.strerror or error} "
            f"({error.filename or path}); check its permissions and free space"
        ) from error
    raise WorkdirLockedError(f"{path}: another run took the lock at the same moment")


@contextlib.contextmanager
def hold(workdir, heartbeat_seconds: float = HEARTBEAT_SECONDS):
    """Holds the workdir's lock for the block, refreshing its heartbeat; removes it after.

    A workdir this call created is removed again if the run left nothing in it (e.g. its data
    was refused, or the lock could not be written), so a failed start leaves no trace.
    """
    created = not pathlib.Path(workdir).exists()
    try:
        path = acquire(workdir)
        stop = threading.Event()

        def beat():
            while not stop.wait(heartbeat_seconds):
                with contextlib.suppress(OSError):
                    os.utime(path)

        thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
        thread.start()
        try:
            yield path
        finally:
            stop.set()
            thread.join()
            path.unlink(missing_ok=True)
    finally:
        if created:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                pathlib.Path(workdir).rmdir()
