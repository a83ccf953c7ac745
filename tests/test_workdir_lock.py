"""One run per workdir: the lock refuses a live holder and takes over a dead one's."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from ldl_jax import workdir_lock


def test_second_run_is_refused_with_the_holders_host_and_pid(tmp_path):
    with workdir_lock.hold(tmp_path / "run") as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(workdir_lock.WorkdirLockedError) as refused:
            workdir_lock.acquire(tmp_path / "run")
        assert str(tmp_path / "run") in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
        assert socket.gethostname() in str(refused.value)
    assert not path.exists()
    assert not (tmp_path / "run").exists()  # created for nothing: removed again


def test_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    (tmp_path / workdir_lock.LOCK_FILE).write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout)})
    )
    (tmp_path / "checkpoints").mkdir()
    with workdir_lock.hold(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert (tmp_path / "checkpoints").is_dir()  # an existing workdir is kept


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
    path = tmp_path / workdir_lock.LOCK_FILE
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(workdir_lock.WorkdirLockedError, match="elsewhere"):
        workdir_lock.acquire(tmp_path)
    old = time.time() - 2 * workdir_lock.STALE_SECONDS
    os.utime(path, (old, old))
    assert workdir_lock.acquire(tmp_path) == path
    assert json.loads(path.read_text())["host"] == socket.gethostname()


def test_heartbeat_refreshes_the_lock(tmp_path):
    with workdir_lock.hold(tmp_path, heartbeat_seconds=0.05) as path:
        old = time.time() - 100
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 50
