"""tools/build_knn.py: the kNN column builder for new data sets."""

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ldl_jax.va_knn import knn_in_va_space
from tools import build_knn

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_build_knn_writes_the_va_neighbours(tmp_path):
    rng = np.random.default_rng(0)
    va = np.round(rng.uniform(-1, 1, (30, 2)), 2)
    frame = pd.DataFrame(
        {
            "subDirectory_filePath": [f"{i}.jpg" for i in range(30)],
            "expression": rng.integers(0, 7, 30),
            "valence": va[:, 0],
            "arousal": va[:, 1],
            "knn": "stale",
        }
    )
    source, out = tmp_path / "train.csv", tmp_path / "train_knn.csv"
    frame.to_csv(source, index=False)
    build_knn.main(["--csv", str(source), "--out", str(out), "--num_neighbors", "5"])
    written = pd.read_csv(out)
    assert list(written.columns) == list(frame.columns)
    knn = np.array([[int(i) for i in row.split(";")] for row in written["knn"]])
    np.testing.assert_array_equal(knn, knn_in_va_space(va, 5))
    assert not np.any(knn == np.arange(30)[:, None])  # nobody is their own neighbour


def test_build_knn_names_the_bad_row(tmp_path):
    source = tmp_path / "train.csv"
    pd.DataFrame({"valence": [0.1, "x", 0.3], "arousal": [0.0, 0.1, 0.2]}).to_csv(
        source, index=False
    )
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "build_knn.py"),
            "--csv",
            str(source),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "train.csv, line 3 (row index 1)" in result.stderr
    assert not (tmp_path / "o").exists()


def test_build_knn_needs_valence_and_arousal():
    with pytest.raises(ValueError, match="arousal"):
        build_knn.add_knn_column(pd.DataFrame({"valence": [0.0, 1.0]}), 1, "a.csv")
