"""The inference tools' command lines (predict, export, convert) on what a user gets wrong: one
`error:` line naming it, exit code 2, no traceback, nothing written."""

import subprocess
import sys

import pytest

from tests.helpers import trainer_cli

pytestmark = pytest.mark.slow  # one Python process per case


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=trainer_cli.environment(),
        cwd=trainer_cli.REPO,
    )


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    return line


def test_predict_names_a_step_no_checkpoint_has(trained_workdir, tmp_path):
    image = tmp_path / "face.png"
    image.write_bytes(b"")  # never read: the checkpoint is looked up first
    done = _run("ldl_jax.predict", f"--workdir={trained_workdir}", "--checkpoint=7", image)
    assert "no checkpoint at step 7 in" in _one_error_line(done)
    assert "latest: [" in done.stderr and "best: [" in done.stderr


def test_export_refuses_an_existing_out_folder_before_loading(tmp_path):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "model.onnx").write_text("an earlier export")
    # No such workdir either: the folder is checked first, before any model is read.
    done = _run("ldl_jax.export", f"--workdir={tmp_path / 'run'}", f"--out={out}", "--format=onnx")
    assert _one_error_line(done) == f"error: {out} exists; choose a new --out folder"
    assert (out / "model.onnx").read_text() == "an earlier export"


def test_convert_names_a_missing_file(tmp_path):
    missing = tmp_path / "backbone.pth"
    done = _run(
        "ldl_jax.convert", "--from=evolve_ir50", f"--in={missing}", f"--out={tmp_path / 'o'}"
    )
    assert _one_error_line(done) == f"error: {missing}: no such file"
    assert not (tmp_path / "o").exists()
