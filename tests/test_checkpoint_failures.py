"""Damaged checkpoints and workdirs that cannot be written, the way they happen: files of a real
run's checkpoint truncated or removed, the trainer's command line run with a file size limit
(writes fail in the kernel, as on a full disk) or on a read-only workdir."""

import os
import pathlib
import re
import shutil
import sys

import jax
import numpy as np
import pytest

from ldl_jax import checkpointing, train
from tests.helpers import trainer_cli
from tests.helpers.tiny import make_data_config
from tests.helpers.workdirs import file_digests, latest_state

pytestmark = pytest.mark.slow  # a 20-step run shared by the module; the command line

STEPS, SAVE_FLAGS = 20, ("--config.num_train_steps=20", "--config.save_interval=1")


def _config(synthetic_dir, num_train_steps=STEPS):
    """Saves at steps 10 and 20 (10 steps per epoch): the same run as SAVE_FLAGS on the CLI."""
    return make_data_config(synthetic_dir, num_train_steps=num_train_steps, save_interval=1)


@pytest.fixture(scope="module")
def trained(synthetic_dir, tmp_path_factory):
    """A finished run with latest checkpoints at steps 10 and 20, and its final state."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    train.train_and_evaluate(_config(synthetic_dir), workdir)
    state, _ = latest_state(_config(synthetic_dir), workdir)
    return workdir, state


def _copy(trained, tmp_path) -> pathlib.Path:
    workdir = tmp_path / "run"
    shutil.copytree(trained[0], workdir)
    return workdir


def _truncate_largest_file(step_dir: pathlib.Path) -> None:
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


def _remove_state_item(step_dir: pathlib.Path) -> None:
    shutil.rmtree(step_dir / "state")


def _keep_first_half_of_files(step_dir: pathlib.Path) -> None:
    """A directory whose writing (or copying) stopped half way."""
    files = sorted(p for p in step_dir.rglob("*") if p.is_file())
    for path in files[len(files) // 2 :]:
        path.unlink()


DAMAGES = {
    "truncated_file": _truncate_largest_file,
    "missing_item": _remove_state_item,
    "half_written_directory": _keep_first_half_of_files,
}


def _assert_same_state(expected, got):
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_resume_falls_back_past_a_damaged_latest_checkpoint(
    synthetic_dir, trained, tmp_path, caplog, damage
):
    workdir = _copy(trained, tmp_path)
    latest = workdir / "checkpoints" / "latest"
    intact = file_digests(latest / "10")
    DAMAGES[damage](latest / "20")

    train.train_and_evaluate(_config(synthetic_dir), workdir)

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("Damaged checkpoint" in w and str(latest / "20") in w for w in warnings), warnings
    assert (workdir / "checkpoints" / "damaged" / "latest-20").is_dir()  # set aside, not deleted
    assert file_digests(latest / "10") == intact
    # Resumed from step 10, the run replayed steps 11..20 to the undamaged run's state.
    state, _ = latest_state(_config(synthetic_dir), workdir)
    _assert_same_state(trained[1], state)
    expected = (trained[0] / train.EVAL_RESULTS_FILE).read_text()
    assert (workdir / train.EVAL_RESULTS_FILE).read_text() == expected


def test_no_readable_checkpoint_stops_the_run_and_moves_nothing(synthetic_dir, trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    latest = workdir / "checkpoints" / "latest"
    for step in ("10", "20"):
        _truncate_largest_file(latest / step)
    damaged = file_digests(latest)
    with pytest.raises(checkpointing.CheckpointReadError, match=str(latest / "20")):
        train.train_and_evaluate(_config(synthetic_dir), workdir)
    assert file_digests(latest) == damaged
    assert not (workdir / "checkpoints" / "damaged").exists()


def test_cli_resumes_past_a_damaged_checkpoint_with_a_warning(synthetic_dir, trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    _truncate_largest_file(workdir / "checkpoints" / "latest" / "20")
    done = trainer_cli.run(tmp_path, synthetic_dir, workdir, *SAVE_FLAGS)
    assert done.returncode == 0, done.stderr[-3000:]
    # No traceback through the trainer's code. (orbax may still log the failed read of its
    # own background tasks, at times, with a traceback of its frames only.)
    our_frame = r'File "[^"]*[/\\]ldl_jax[/\\](data[/\\])?\w+\.py"'
    assert not re.search(our_frame, done.stderr), done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "Damaged checkpoint" in line]
    assert len(warnings) == 1 and str(workdir / "checkpoints" / "latest" / "20") in warnings[0]
    expected = (trained[0] / train.EVAL_RESULTS_FILE).read_text()
    assert (workdir / train.EVAL_RESULTS_FILE).read_text() == expected


# Runs the rest of its command line with a file size limit of argv[1] bytes: writes past it
# fail with EFBIG in the kernel, as on a full disk (Python ignores SIGXFSZ).
_LIMIT_THEN_EXEC = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY)); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def _run_with_file_size_limit(limit, *args):
    # No .pyc or compilation cache files: they would be cut short by the limit.
    env = dict(trainer_cli.environment(compilation_cache=False), PYTHONDONTWRITEBYTECODE="1")
    wrapper = (sys.executable, "-c", _LIMIT_THEN_EXEC, str(limit))
    return trainer_cli.run(*args, env=env, wrapper=wrapper)


def test_full_disk_at_start_names_the_workdir_and_changes_nothing(synthetic_dir, trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    before = file_digests(workdir)
    # 16 bytes: enough for the imports' temporary-directory probe, not for the lock file.
    done = _run_with_file_size_limit(16, tmp_path, synthetic_dir, workdir, *SAVE_FLAGS)
    assert done.returncode == 2, done.stderr[-3000:]
    assert trainer_cli.error_lines(done) == [
        f"error: cannot write to the workdir {workdir}: File too large "
        f"({workdir / 'lock.json'}); check its permissions and free space"
    ]
    assert file_digests(workdir) == before  # no lock file left behind


def test_full_disk_at_a_save_keeps_the_earlier_checkpoints(synthetic_dir, trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    latest = workdir / "checkpoints" / "latest"
    intact = {step: file_digests(latest / step) for step in ("10", "20")}
    # 256 KiB: the events and JSON files fit, a checkpoint's data file (over 1 MiB) does not.
    done = _run_with_file_size_limit(
        256 << 10, tmp_path, synthetic_dir, workdir, "--config.num_train_steps=30", SAVE_FLAGS[1]
    )
    assert done.returncode == 1, done.stderr[-3000:]
    [error] = trainer_cli.error_lines(done)
    assert f"error: CheckpointWriteError: cannot save a checkpoint in {latest} (" in error
    assert "File too large" in error and "kept (steps [10, 20])" in error
    assert {step: file_digests(latest / step) for step in ("10", "20")} == intact
    state, _ = latest_state(_config(synthetic_dir), workdir)
    _assert_same_state(trained[1], state)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_workdir_is_refused_at_start(synthetic_dir, tmp_path):
    workdir = tmp_path / "read_only"
    workdir.mkdir()
    workdir.chmod(0o555)
    try:
        done = trainer_cli.run(tmp_path, synthetic_dir, workdir)
    finally:
        workdir.chmod(0o755)
    assert done.returncode == 2, done.stderr[-3000:]
    [error] = trainer_cli.error_lines(done)
    assert error.startswith(f"error: cannot write to the workdir {workdir}: Permission denied")
    assert list(workdir.iterdir()) == []
