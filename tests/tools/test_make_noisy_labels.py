"""tools/make_noisy_labels.py: flipped training labels, the clean ones kept beside them."""

import numpy as np
import pandas as pd
import pytest

from tools import make_noisy_labels


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
    uniform = (tmp_path / "train_30_uniform.csv").read_bytes()
    # The other flip mode's default output is another file.
    make_noisy_labels.main(["--csv", str(source), "--ratio", "0.3", "--seed", "1"])
    assert (tmp_path / "train_30_uniform.csv").read_bytes() == uniform
    assert (tmp_path / "train_30.csv").read_bytes() != uniform
    written = pd.read_csv(tmp_path / "train_30_uniform.csv")
    assert (written["expression"] != written["expression_backup"]).sum() == 9
    assert (written["expression_backup"] == np.repeat(np.arange(3), 10)).all()
    assert (written["knn"] == "1;2").all()
