"""The noise study's per-run data: noisy labels, a validation split carved from them, and the
VA-neighbour relabelling baseline.

Every method of a study sees the same rows: one fixed set of training rows (chosen by the data
seed) becomes the validation split, whose labels are as noisy as the training labels, because
a user has no clean validation set; checkpoints are picked on it. The labels are flipped over
the whole clean training table before the split, seeded by (data seed, run seed), so two data
seeds never share a flip pattern. The remaining training rows get their VA neighbours rebuilt
among themselves.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd

from ldl_jax.va_knn import format_knn_column, knn_in_va_space
from tools.make_noisy_labels import flip_labels

# The validation split's key in the data seed's random stream (any constant other streams lack).
_VAL_STREAM = 0x5A1
NUM_NEIGHBORS_WRITTEN = 20  # knn entries per training row, as the generator writes them


def val_rows(num_rows: int, fraction: float, data_seed: int) -> np.ndarray:
    """The sorted rows of the clean training table that form the validation split."""
    count = int(round(num_rows * fraction))
    if not 0 < count < num_rows:
        raise ValueError(f"a validation fraction of {fraction} leaves no rows on one side")
    rng = np.random.default_rng([data_seed, _VAL_STREAM])
    return np.sort(rng.choice(num_rows, count, replace=False))


def noisy_labels(clean: np.ndarray, noise: float, mode: str, data_seed: int, seed: int):
    """`clean` with `noise` of each class flipped (`tools/make_noisy_labels.py`), seeded by
    (data seed, run seed)."""
    if noise == 0:
        return np.asarray(clean).copy()
    return flip_labels(clean, noise, mode, [data_seed, seed])


def vote_labels(labels: np.ndarray, knn: np.ndarray, num_voters: int) -> np.ndarray:
    """Each row's label replaced by the majority of its own label and its `num_voters` nearest
    VA neighbours' labels; a tie that includes the row's own label keeps it, any other tie goes
    to the tied label held by the nearest neighbour."""
    labels = np.asarray(labels)
    voters = np.concatenate([labels[:, None], labels[knn[:, :num_voters]]], axis=1)
    num_classes = int(labels.max()) + 1
    counts = np.stack([(voters == c).sum(axis=1) for c in range(num_classes)], axis=1)
    tied = counts == counts.max(axis=1, keepdims=True)
    voted = labels.copy()
    for row in np.flatnonzero(~tied[np.arange(len(labels)), labels]):
        voted[row] = next(label for label in voters[row] if tied[row, label])
    return voted


def split_noisy_table(
    clean_csv: pathlib.Path, noisy: np.ndarray, held_out: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, validation) frames: `noisy` labels with the clean ones in `expression_backup`;
    the training rows' `knn` rebuilt among themselves from their valence and arousal."""
    frame = pd.read_csv(clean_csv)
    frame = frame.assign(expression_backup=frame["expression"], expression=noisy)
    is_val = np.zeros(len(frame), bool)
    is_val[held_out] = True
    val = frame.loc[is_val, ["subDirectory_filePath", "expression", "expression_backup"]]
    train = frame.loc[~is_val].reset_index(drop=True)
    va = train[["valence", "arousal"]].to_numpy(np.float64)
    train["knn"] = format_knn_column(knn_in_va_space(va, NUM_NEIGHBORS_WRITTEN))
    return train, val.reset_index(drop=True)


def write_csv(frame: pd.DataFrame, path: pathlib.Path) -> None:
    """Writes via a temporary file, so a crash never leaves a truncated CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    frame.to_csv(temporary, index=False)
    temporary.replace(path)


def parse_knn(frame: pd.DataFrame) -> np.ndarray:
    return np.array([[int(j) for j in row.split(";")] for row in frame["knn"]])


def neighbor_label_purity(frame: pd.DataFrame, num_neighbors: int, column="expression") -> float:
    """The share of each row's `num_neighbors` nearest VA neighbours whose `column` label is
    the row's."""
    labels = frame[column].to_numpy()
    knn = parse_knn(frame)[:, :num_neighbors]
    return float((labels[knn] == labels[:, None]).mean())
