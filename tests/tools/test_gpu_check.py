"""tools/gpu_check.py --dry_run, as the GPU machine would run it: in subprocesses that cannot
import TensorFlow or clu (absent there), at tiny sizes on the CPU."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests.helpers.tiny import XLA_CACHE_DIR
from tools import gpu_check

REPO = pathlib.Path(__file__).resolve().parents[2]
BENCH = "bench/resnet_tiny-16/float32/b4"
TRAIN_STEPS = 40


def run_dry(tmp_path: pathlib.Path, *flags: str) -> tuple[int, dict, str]:
    """Runs the dry run with `flags`; returns (exit code, the JSON, the markdown)."""
    blocked = tmp_path / "blocked"
    for name in ("tensorflow", "clu"):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not on the GPU machine')\n"
        )
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(blocked), os.environ.get("PYTHONPATH")])),
        JAX_COMPILATION_CACHE_DIR=str(XLA_CACHE_DIR),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
    )
    out = tmp_path / "out"
    command = [sys.executable, "tools/gpu_check.py", "--dry_run", f"--out={out}", *flags]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    assert (out / "gpu_check.json").exists(), done.stderr
    assert (out / "gpu_check.md").read_text() in done.stdout  # the table is printed too
    return done.returncode, json.loads((out / "gpu_check.json").read_text()), done.stdout


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The train part and one benchmark configuration."""
    return run_dry(
        tmp_path_factory.mktemp("gpu_check"),
        "--backbones=resnet_tiny:16",
        "--dtypes=float32",
        "--batch_sizes=4",
        f"--train_steps={TRAIN_STEPS}",
    )


@pytest.mark.slow
def test_every_planned_part_runs_to_the_end_without_tensorflow(dry_run):
    returncode, record, _ = dry_run
    parts = record["parts"]
    assert returncode == 0, {name: entry.get("error") for name, entry in parts.items()}
    assert list(parts) == ["train", BENCH]
    assert all(entry["status"] == "ok" for entry in parts.values())
    assert all(entry["tensorflow_imported"] is False for entry in parts.values())
    assert record["environment"]["backend"] == "cpu"


@pytest.mark.slow
def test_the_benchmark_part_reports_each_step_and_the_ratios(dry_run):
    result = dry_run[1]["parts"][BENCH]["result"]
    for step in ("ldl_step", "bank_step", "floor", "plain_step"):
        assert result[step]["all_images_per_s"] > 0
        assert result[step]["compile_seconds"] > 0
        assert result[step]["gflops_per_step"] > 0
        assert "mfu" not in result[step]  # no peak is known for a CPU
    assert result["floor_ratio"] > 0 and result["bank_speedup"] > 0
    assert result["bank_flops_ratio"] > 1  # the bank step skips the neighbours' passes
    assert result["placements"]["device"]["fed_ratio"] > 0
    assert (result["backbone"], result["input_size"], result["batch_size"]) == (
        "resnet_tiny",
        16,
        4,
    )


@pytest.mark.slow
def test_the_train_part_trains_in_bfloat16_and_its_loss_falls(dry_run):
    result = dry_run[1]["parts"]["train"]["result"]
    assert result["dtype"] == "bfloat16"
    assert result["steps"] == TRAIN_STEPS
    assert result["metrics_finite"] and result["params_finite"]
    assert result["loss_last"] < result["loss_first"]
    assert result["checks_passed"]
    assert 0 <= result["test_accuracy"] <= 1


@pytest.mark.slow
def test_the_table_has_a_row_for_each_part(dry_run):
    table = dry_run[2]
    assert f"| resnet_tiny bfloat16 B=8 | ok | {TRAIN_STEPS} |" in table
    assert "| resnet_tiny-16 | float32 | 4 | ok |" in table


def test_parts_past_their_budget_are_recorded_as_timed_out(tmp_path):
    returncode, record, table = run_dry(
        tmp_path,
        "--backbones=ir_tiny:16",
        "--dtypes=float32",
        "--batch_sizes=2",
        "--train_budget=0",
        "--bench_budget=1",
    )
    train, bench = record["parts"]["train"], record["parts"]["bench/ir_tiny-16/float32/b2"]
    assert returncode == 0
    assert train["status"] == "timed_out" and train["started"] is False
    assert bench["status"] == "timed_out" and bench["started"] is True
    assert 1 <= bench["seconds"] < 10  # killed at its budget, not left to finish
    assert "| ir_tiny-16 | float32 | 2 | timed_out |" in table


@pytest.mark.parametrize(
    "device_kind, dtype, expected",
    [
        ("NVIDIA H100 PCIe", "bfloat16", 756e12),
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
        ("NVIDIA H200", "float32", 495e12),
        ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
        ("cpu", "bfloat16", None),
    ],
)
def test_the_peak_is_the_first_listed_device_the_kind_names(device_kind, dtype, expected):
    assert gpu_check.peak_flops(device_kind, dtype) == expected
