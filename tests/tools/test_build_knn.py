"""The kNN column builder for new data sets."""

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ldl_jax.va_knn import knn_in_va_space
from tools import build_knn, make_noisy_labels

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


@pytest.mark.parametrize("mode", ["proportional", "uniform"])
def test_noisy_labels_flip_the_stated_share_per_class(mode):
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    noisy = make_noisy_labels.flip_labels(labels, 0.2, mode, seed=0)
    for k, n_k in zip(range(4), [100, 50, 30, 20], strict=True):
        assert np.sum((labels == k) & (noisy != k)) == int(n_k * 0.2)
    np.testing.assert_array_equal(noisy, make_noisy_labels.flip_labels(labels, 0.2, mode, 0))
    assert not np.array_equal(noisy, make_noisy_labels.flip_labels(labels, 0.2, mode, 1))


def test_proportional_noise_follows_class_frequencies():
    labels = np.repeat(np.arange(3), [3000, 6000, 1000])
    noisy = make_noisy_labels.flip_labels(labels, 0.5, "proportional", seed=0)
    moved_from_0 = noisy[(labels == 0) & (noisy != 0)]
    # Class 1 is 6x as frequent as class 2: it receives about 6/7 of class 0's flips.
    assert np.mean(moved_from_0 == 1) == pytest.approx(6 / 7, abs=0.03)


def test_noisy_labels_cli_keeps_the_clean_label(tmp_path):
    source = tmp_path / "train.csv"
    pd.DataFrame({"expression": np.repeat(np.arange(3), 10), "knn": "1;2"}).to_csv(
        source, index=False
    )
    make_noisy_labels.main(["--csv", str(source), "--ratio", "0.3", "--mode", "uniform"])
    written = pd.read_csv(tmp_path / "train_30.csv")
    assert (written["expression"] != written["expression_backup"]).sum() == 9
    assert (written["expression_backup"] == np.repeat(np.arange(3), 10)).all()
    assert (written["knn"] == "1;2").all()
