"""tools/noise_splits.py: the noise study's validation rows, flipped labels, votes and split."""

import numpy as np
import pandas as pd
import pytest

from tools import noise_splits


def test_val_rows_depend_on_the_data_seed_only():
    rows = noise_splits.val_rows(100, 0.1, data_seed=0)
    assert len(rows) == 10 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, noise_splits.val_rows(100, 0.1, data_seed=0))
    assert not np.array_equal(rows, noise_splits.val_rows(100, 0.1, data_seed=1))
    with pytest.raises(ValueError, match="no rows"):
        noise_splits.val_rows(5, 0.01, data_seed=0)


def test_flips_are_seeded_by_data_seed_and_seed():
    clean = np.repeat(np.arange(7), 20)
    flips = {
        (d, s): noise_splits.noisy_labels(clean, 0.3, "proportional", d, s)
        for d in (0, 1)
        for s in (0, 1)
    }
    for noisy in flips.values():  # int(20 * 0.3) = 6 flipped per class
        assert all((noisy[clean == k] != k).sum() == 6 for k in range(7))
    patterns = [tuple(noisy != clean) for noisy in flips.values()]
    assert len(set(patterns)) == 4  # no two (data seed, seed) pairs share a flip pattern
    np.testing.assert_array_equal(
        flips[1, 0], noise_splits.noisy_labels(clean, 0.3, "proportional", 1, 0)
    )
    np.testing.assert_array_equal(noise_splits.noisy_labels(clean, 0.0, "uniform", 1, 0), clean)


def test_vote_keeps_ties_with_the_own_label_and_otherwise_follows_the_nearest():
    labels = np.array([0, 1, 1, 2, 2, 0])
    knn = np.array(
        [
            [1, 2, 3, 4],  # votes 0 | 1 1 2 2: tie of 1 and 2 without 0 -> row 1's label, 1
            [0, 5, 3, 2],  # votes 1 | 0 0 2 1: tie of 0 and 1 -> own label 1
            [1, 0, 3, 4],  # votes 1 | 1 0 2 2: tie of 1 and 2 -> own label 1
            [4, 0, 1, 2],  # votes 2 | 2 0 1 1: tie of 1 and 2 -> own label 2
            [0, 5, 1, 3],  # votes 2 | 0 0 1 2: tie of 0 and 2 -> own 2
            [3, 4, 0, 1],  # votes 0 | 2 2 0 1: tie of 0 and 2 -> own 0
        ]
    )
    np.testing.assert_array_equal(noise_splits.vote_labels(labels, knn, 4), [1, 1, 1, 2, 2, 0])
    # Two voters: row 0 sees 0 | 1 1 -> 1; row 3 sees 2 | 2 0 -> 2.
    np.testing.assert_array_equal(noise_splits.vote_labels(labels, knn, 2)[[0, 3]], [1, 2])


def test_split_rebuilds_the_training_rows_neighbours_among_themselves(tmp_path):
    rng = np.random.default_rng(0)
    num_rows = 40
    va = np.round(rng.uniform(-1, 1, (num_rows, 2)), 4)
    clean = pd.DataFrame(
        {
            "subDirectory_filePath": [f"train/{i:05d}.jpg" for i in range(num_rows)],
            "expression": rng.integers(0, 7, num_rows),
            "valence": va[:, 0],
            "arousal": va[:, 1],
            "knn": ["0"] * num_rows,  # stale: must be rebuilt
        }
    )
    path = tmp_path / "train.csv"
    clean.to_csv(path, index=False)
    noisy = (clean["expression"].to_numpy() + 1) % 7
    held_out = np.array([3, 7, 20])
    train, val = noise_splits.split_noisy_table(path, noisy, held_out)
    kept = np.setdiff1d(np.arange(num_rows), held_out)
    assert (
        val["subDirectory_filePath"].tolist() == clean["subDirectory_filePath"][held_out].tolist()
    )
    np.testing.assert_array_equal(val["expression"], noisy[held_out])
    np.testing.assert_array_equal(val["expression_backup"], clean["expression"][held_out])
    np.testing.assert_array_equal(train["expression"], noisy[kept])
    # Brute force: each kept row's nearest kept rows by L1 in VA space.
    points = va[kept]
    distances = np.abs(points[:, None] - points[None]).sum(-1)
    np.fill_diagonal(distances, np.inf)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(noise_splits.parse_knn(train), expected)
