"""kill -9 drill: the trainer's command, killed with SIGKILL at several moments (random training
steps, and while an asynchronous checkpoint save is being written) and rerun each time, ends in
the state, checkpoints and eval_results.json of an uninterrupted run, bit for bit."""

import collections
import json
import os
import random
import re
import signal
import subprocess
import threading
import time

import jax
import numpy as np
import pytest

from ldl_jax import checkpointing, train
from tests.helpers import trainer_cli
from tests.helpers.tiny import make_data_config
from tests.helpers.workdirs import latest_state

pytestmark = pytest.mark.slow  # the trainer's command line, killed and rerun

NUM_STEPS = 40  # 4 epochs of 10 steps: latest checkpoints at 10, 20, 30 and 40
# --verbose_logs: the metrics line logged after every step reaches stderr (not only train.log).
FLAGS = (f"--config.num_train_steps={NUM_STEPS}", "--config.save_interval=1", "--verbose_logs")
TRAIN_LOG = re.compile(r"\] \[(\d+)\] train/")
SAVING = ".orbax-checkpoint-tmp"  # a checkpoint being written; renamed once complete


class _Trainer:
    """The trainer's command in a subprocess, its log read on a thread: the last training step
    it logged and the log's tail."""

    def __init__(self, tmp_path, data_dir, workdir):
        self.process = subprocess.Popen(
            trainer_cli.command(tmp_path, data_dir, workdir, *FLAGS),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=trainer_cli.REPO,
            env=trainer_cli.environment(),
        )
        self.first_step = self.last_step = None
        self.tail = collections.deque(maxlen=30)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stderr:
            self.tail.append(line)
            logged = TRAIN_LOG.search(line)
            if logged:
                self.last_step = int(logged.group(1))
                self.first_step = self.first_step or self.last_step

    def wait(self) -> int:
        self.process.wait(timeout=300)
        self.reader.join()
        return self.process.returncode


def _saving(workdir, step) -> bool:
    return (workdir / "checkpoints" / "latest" / f"{step}{SAVING}").exists()


def _kill_while_saving(process, workdir, step) -> bool:
    """Freezes the trainer if it is writing the latest checkpoint of `step`; kills it if the
    save is still unfinished then (the check and the freeze race with the save), else thaws it.
    """
    if not _saving(workdir, step):
        return False
    os.kill(process.pid, signal.SIGSTOP)
    if _saving(workdir, step):
        os.kill(process.pid, signal.SIGKILL)
        return True
    os.kill(process.pid, signal.SIGCONT)
    return False


def _kill_at(trainer, workdir, moment, rng) -> str:
    """Watches the trainer until `moment`, kills it then and says where it died.

    `moment` is ("step", (FIRST, LAST)): after a random training step in FIRST..LAST; or
    ("save", STEP): while the latest checkpoint of STEP is being written.
    """
    kind, where = moment
    target = None
    while trainer.process.poll() is None:
        if kind == "save" and _kill_while_saving(trainer.process, workdir, where):
            break
        if kind == "step" and trainer.first_step is not None:
            target = target or rng.randint(max(trainer.first_step, where[0]), where[1])
            if trainer.last_step >= target:
                trainer.process.send_signal(signal.SIGKILL)
                break
        time.sleep(0.001)
    assert trainer.wait() == -signal.SIGKILL, f"ended before {moment}: {''.join(trainer.tail)}"
    return f"while saving step {where}" if kind == "save" else f"after step {trainer.last_step}"


def _checkpoint_dirs(workdir) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in (workdir / "checkpoints").glob("*/*"))


def _assert_same_state(expected, got):
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_killed_and_rerun_training_matches_an_uninterrupted_run(synthetic_dir, tmp_path):
    straight, drilled = tmp_path / "straight", tmp_path / "drilled"
    reference = _Trainer(tmp_path, synthetic_dir, straight)
    rng = random.Random(0)
    # Before the first latest checkpoint; while saving it; after a later step (the save of
    # step 10 is complete once the one of step 20 starts); while saving the last one. Each
    # rerun resumes from whatever the kill left.
    moments = [("step", (1, 9)), ("save", 10), ("step", (21, 39)), ("save", NUM_STEPS)]
    drilled_at = [
        _kill_at(_Trainer(tmp_path, synthetic_dir, drilled), drilled, m, rng) for m in moments
    ]
    last = _Trainer(tmp_path, synthetic_dir, drilled)
    assert last.wait() == 0, "".join(last.tail)
    assert reference.wait() == 0, "".join(reference.tail)

    config = make_data_config(synthetic_dir, num_train_steps=NUM_STEPS, save_interval=1)
    for which in (checkpointing.LATEST, checkpointing.BEST):
        expected, expected_meta = latest_state(config, straight, which=which)
        got, meta = latest_state(config, drilled, which=which)
        _assert_same_state(expected, got)
        assert meta == expected_meta, drilled_at
    assert _checkpoint_dirs(drilled) == _checkpoint_dirs(straight)  # no leftovers, none set aside
    results = (drilled / train.EVAL_RESULTS_FILE).read_text()
    assert results == (straight / train.EVAL_RESULTS_FILE).read_text(), drilled_at
    assert json.loads(results)["test"]["step"] == NUM_STEPS
    assert not (drilled / "lock.json").exists()
