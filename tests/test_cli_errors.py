"""The trainer's command line on bad input: one `error:` line naming the culprit, exit code 2,
no traceback, and the workdir untouched."""

import os

import pandas as pd
import pytest

from ldl_jax import workdir_lock
from tests import trainer_cli


def _run(tmp_path, data_dir, *extra, workdir=None):
    workdir = workdir or tmp_path / "run"
    done = trainer_cli.run(tmp_path, data_dir, workdir, *extra)
    return done, trainer_cli.error_lines(done), workdir


def _bad_copy(synthetic_dir, tmp_path, mutate):
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(synthetic_dir / "images")
    for name in ("val.csv", "test.csv"):
        (data / name).write_bytes((synthetic_dir / name).read_bytes())
    frame = pd.read_csv(synthetic_dir / "train.csv")
    mutate(frame).to_csv(data / "train.csv", index=False)
    return data


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda f: f.assign(expression=f["expression"].where(f.index != 3, 9)), "line 5"),
        (lambda f: f.drop(columns=["knn"]), "knn"),
        (lambda f: f.assign(valence=f["valence"].where(f.index != 0, float("nan"))), "valence"),
    ],
    ids=["label_out_of_range", "missing_column", "non_finite_va"],
)
def test_bad_training_csv(synthetic_dir, tmp_path, mutate, expected):
    data = _bad_copy(synthetic_dir, tmp_path, mutate)
    done, errors, workdir = _run(tmp_path, data)
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and expected in errors[0] and "train.csv" in errors[0]
    assert "Traceback" not in done.stderr
    assert not workdir.exists()


def test_config_typo(synthetic_dir, tmp_path):
    done, errors, workdir = _run(tmp_path, synthetic_dir, "--config.batch_sise=8")
    assert done.returncode == 2
    assert errors == [
        "error: bad config override: config has no field 'batch_sise' (did you mean 'batch_size'?)"
    ]
    assert not workdir.exists()


def test_workdir_in_use(synthetic_dir, tmp_path):
    with workdir_lock.hold(tmp_path / "busy") as lock:
        before = sorted(p.name for p in lock.parent.iterdir())
        done, errors, _ = _run(tmp_path, synthetic_dir, workdir=tmp_path / "busy")
        assert done.returncode == 2
        assert len(errors) == 1 and f"pid {os.getpid()}" in errors[0]
        assert sorted(p.name for p in lock.parent.iterdir()) == before
