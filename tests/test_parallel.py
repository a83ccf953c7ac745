"""Data parallelism: 1 vs 2 vs 4 devices (pmap and mesh), a device-count change on restore,
and two processes, with images fed from the host and resident on the devices. Devices are faked
on the CPU in subprocesses (tests/helpers/parallel_worker.py)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ldl_jax import train
from tests.helpers.tiny import compilation_cache_env, make_data_config, make_tiny_config
from tools import random_inputs

pytestmark = pytest.mark.slow  # workers on faked devices in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Adam moves every parameter by about +-lr on its first steps, whatever the gradient's size, so
# a parameter whose gradient is at rounding level may step the other way on another device
# count: parameters, and the BatchNorm statistics of the activations they produce, agree to
# about 3 steps x lr; so do the memory bank's entries, activations of those parameters. Adam's
# moments, theta, the centres and the metrics agree to float32
# reduction order, except where such an activation crosses a ReLU's kink: then the gradient of
# the next layer's weights of that unit, and Adam's moments with it, differ by up to a
# gradient's size. A share of all Adam's moments up to KINK_SHARE may do so. (Per-device instead of
# synchronised BN moves them by ~1e-1; a gradient off by a factor moves most of them.)
PARAM_ATOL = 3e-3
STATE_ATOL = 2e-4
KINK_SHARE = 1e-3
PLACEMENTS = ("host", "device")


def _worker(*args, env=None):
    command = [sys.executable, "-m", "tests.helpers.parallel_worker", *args]
    environment = dict(os.environ, **compilation_cache_env(), **(env or {}))
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait(processes):
    for process in processes:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"exit status {process.returncode}\n{output[-3000:]}"


def _load(out, placements=PLACEMENTS):
    """{placement: state} of the states a worker wrote into `out`."""
    return {placement: dict(np.load(out / f"{placement}.npz")) for placement in placements}


@pytest.fixture(scope="module")
def states(tmp_path_factory):
    """Final states after 3 steps of the same global batches, per (mode, devices, placement);
    each worker runs both placements (one process, two compiled steps)."""
    out = tmp_path_factory.mktemp("parallel")
    runs = [("mesh", 1), ("mesh", 2), ("mesh", 4), ("pmap", 2), ("pmap", 4)]
    placements = "--placements=" + ",".join(PLACEMENTS)
    for start in range(0, len(runs), 2):  # two at a time on a 2-core machine
        _wait(
            [
                _worker(
                    f"--devices={devices}",
                    f"--mode={mode}",
                    placements,
                    f"--out={out / f'{mode}_{devices}'}",
                )
                for mode, devices in runs[start : start + 2]
            ]
        )
    return {
        (mode, devices, placement): state
        for mode, devices in runs
        for placement, state in _load(out / f"{mode}_{devices}").items()
    }


def _assert_states_close(expected, got):
    assert expected.keys() == got.keys()
    moments_off = {}  # Adam's moments beyond STATE_ATOL, per leaf: (count, size)
    for key in expected:
        atol = PARAM_ATOL if key.startswith((".params", ".batch_stats", ".bank")) else STATE_ATOL
        if key.startswith(".opt_state"):
            off = np.abs(np.asarray(got[key]) - np.asarray(expected[key])) > atol
            moments_off[key] = (int(off.sum()), off.size)
            continue
        np.testing.assert_allclose(got[key], expected[key], atol=atol, rtol=0, err_msg=key)
    # The share is over all the moments: one kink in an 8-unit layer is 1 of 8 of its leaf.
    num_off, size = (sum(counts) for counts in zip(*moments_off.values(), strict=True))
    differing = {key: counts for key, counts in moments_off.items() if counts[0]}
    assert num_off <= KINK_SHARE * size, f"{num_off} of {size} moments differ: {differing}"


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("run", [("mesh", 2), ("mesh", 4), ("pmap", 2), ("pmap", 4)])
def test_devices_agree_with_one_device(states, run, placement):
    _assert_states_close(states["mesh", 1, placement], states[(*run, placement)])


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_theta_rows_of_every_device_are_updated(states, placement):
    moved = states["pmap", 4, placement][".theta"] != 0.5
    # 3 steps x 4 rows: every batch row moved, wherever its device was.
    assert moved.sum() >= 4
    np.testing.assert_array_equal(moved, states["mesh", 1, placement][".theta"] != 0.5)


def test_memory_bank_rows_of_every_device_reach_every_replica(tmp_path):
    """With the bank, pmap on 2 devices ends in the state of one device, for images fed from
    the host and for images resident on the devices (the two placements draw different
    images), and the bank rows of every step's batch, whichever device held them, are
    rewritten; no other row is."""
    outs = {mode: tmp_path / f"bank_{mode}" for mode in ("mesh", "pmap")}
    _wait(
        [
            _worker(
                f"--devices={1 if mode == 'mesh' else 2}",
                f"--mode={mode}",
                "--neighbors=memory_bank",
                "--placements=" + ",".join(PLACEMENTS),
                f"--out={out}",
            )
            for mode, out in outs.items()
        ]
    )
    one_device, two_devices = (_load(out) for out in outs.values())
    config = make_tiny_config()
    initial = random_inputs.random_bank(config, 20).features
    written = np.unique(
        [random_inputs.random_train_batch(config, 20, seed=s)["index"] for s in range(3)]
    )
    for placement in PLACEMENTS:
        _assert_states_close(one_device[placement], two_devices[placement])
        bank = two_devices[placement][".bank.features"]
        np.testing.assert_array_equal(np.flatnonzero(np.any(bank != initial, axis=1)), written)


def test_per_device_batch_norm_differs_from_synchronised(states, tmp_path):
    _wait([_worker("--devices=2", "--mode=pmap", "--sync_batch_norm=0", f"--out={tmp_path}")])
    local, synchronised = _load(tmp_path, ["host"])["host"], states["pmap", 2, "host"]
    assert np.isfinite(local["metric/loss"]).all()
    # The first step's loss differs: each device normalised its own half batch.
    assert abs(local["metric/loss"][0] - synchronised["metric/loss"][0]) > 1e-3
    assert np.abs(local[".theta"] - synchronised[".theta"]).max() > 10 * STATE_ATOL


def test_train_on_two_devices_evaluate_on_one(synthetic_dir, tmp_path):
    # The trainer's device-resident feed on two devices; its host feed is the 1-device trainer's
    # (tests/test_train.py) with the batch placement the workers above check.
    _wait(
        [
            _worker(
                "--devices=2",
                "--mode=mesh",
                "--steps=2",
                "--placement=device",
                f"--data_dir={synthetic_dir}",
                f"--workdir={tmp_path}",
            )
        ]
    )
    trained = json.loads((tmp_path / train.EVAL_RESULTS_FILE).read_text())
    results = train.evaluate_checkpoint(make_data_config(synthetic_dir), tmp_path, "latest")
    for name in ("val", "test"):
        assert results[name]["confusion_matrix"] == trained[name]["confusion_matrix"]
        np.testing.assert_allclose(
            results[name]["mean_distribution"], trained[name]["mean_distribution"], atol=1e-5
        )


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mode", ["mesh", "pmap"])
def test_two_processes_match_one_process_with_two_devices(states, tmp_path, mode):
    coordinator = f"127.0.0.1:{_free_port()}"
    _wait(
        [
            _worker(
                "--devices=1",
                f"--mode={mode}",
                "--placements=" + ",".join(PLACEMENTS),
                "--num_processes=2",
                f"--process_id={index}",
                f"--coordinator={coordinator}",
                f"--out={tmp_path}",
            )
            for index in range(2)
        ]
    )
    for placement, state in _load(tmp_path).items():
        _assert_states_close(states[mode, 2, placement], state)


def test_two_processes_open_a_synthetic_set_that_process_0_writes(tmp_path):
    """Process 1 waits for the set at a barrier (without it, it finds no train.csv), and the
    decoded-image cache both open is built once, leaving no temporary file."""
    coordinator = f"127.0.0.1:{_free_port()}"
    _wait(
        [
            _worker(
                "--devices=1",
                "--mode=mesh",
                "--steps=0",
                "--num_processes=2",
                f"--process_id={index}",
                f"--coordinator={coordinator}",
                f"--data_dir={tmp_path / 'synthetic'}",
                "--synthetic=1",
                f"--workdir={tmp_path / 'run'}",
            )
            for index in range(2)
        ]
    )
    cache = sorted(path.name for path in (tmp_path / "run" / "cache").iterdir())
    assert cache == ["train_images.npy", "train_images.npy.json", "train_images.npy.lock"]
