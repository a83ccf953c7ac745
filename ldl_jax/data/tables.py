"""Reading and validating the data CSVs (docs/METHOD.md §1); no TensorFlow here.

`read_train_table` and `read_eval_table` check a CSV completely (columns, labels,
valence/arousal, neighbour lists, image files) before any image is decoded; every error names
the file, the row and the column. `read_va_table` and `read_image_frame` read the valence/arousal
regressor's CSVs with the same building blocks (`read_csv`, `parse_finite`, `row_error`,
`image_paths`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ldl_jax import ldl

_MISSING_IMAGES_SHOWN = 5

# The two formats of a task's rows (`ldl_jax.data.pipeline.ROW_FORMATS`): LDLVA's training
# and evaluation CSVs (TRAIN_COLUMNS, EVAL_COLUMNS) or the VA regressor's (VA_COLUMNS).
LDLVA_ROWS = "ldlva"
VA_ROWS = "va"

TRAIN_COLUMNS = ("subDirectory_filePath", "expression", "valence", "arousal", "knn")
EVAL_COLUMNS = ("subDirectory_filePath", "expression")
# Optional in an evaluation CSV: each image's crowd label distribution, ';'-joined C floats.
DISTRIBUTION_COLUMN = "distribution"
DISTRIBUTION_SUM_TOLERANCE = 0.01


class DataError(ValueError):
    """Bad input data.

    The message names the file, the row and the field. Rows are given both as the 1-based
    CSV line (the header is line 1) and as the 0-based data row index.
    """


@dataclasses.dataclass(frozen=True)
class TrainTable:
    """The validated training CSV.

    Attributes:
      paths: (N,) str, absolute image paths.
      labels: (N,) int32 expression labels.
      va: (N, 2) float32 valence and arousal.
      knn: (N, K) int32, the first K neighbour row indices, nearest first.
      va_weights: (N, K) float32, a_ij = exp(-(|dv| + |da|) / bandwidth).
    """

    paths: np.ndarray
    labels: np.ndarray
    va: np.ndarray
    knn: np.ndarray
    va_weights: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.paths)


@dataclasses.dataclass(frozen=True)
class EvalTable:
    """The validated evaluation CSV: (N,) absolute image paths, (N,) int32 labels and, where
    the CSV has a `distribution` column, (N, C) float64 crowd distributions (each summing to 1)."""

    paths: np.ndarray
    labels: np.ndarray
    distributions: np.ndarray | None = None


def read_train_table(
    csv_path, image_dir, *, num_classes: int, num_neighbors: int, va_bandwidth: float = 0.5
) -> TrainTable:
    """Reads and validates a training CSV (docs/METHOD.md §1) and precomputes the VA weights.

    Args:
      csv_path: the CSV with columns subDirectory_filePath, expression, valence, arousal
        and knn (';'-joined 0-based row indices, nearest first, same count on every row).
      image_dir: the directory `subDirectory_filePath` is relative to.
      num_classes: C; labels must lie in [0, C).
      num_neighbors: K; only the first K neighbours of each row are kept.
      va_bandwidth: the bandwidth of the VA similarity kernel.

    Returns:
      The table; `va_weights` is computed once here.

    Raises:
      DataError: on any invalid field, naming the file, row and column, or when image
        files are missing.
    """
    if num_neighbors < 1:
        raise ValueError(f"num_neighbors must be >= 1; got {num_neighbors}.")
    csv_path = os.fspath(csv_path)
    frame = read_csv(csv_path, TRAIN_COLUMNS)
    labels = parse_labels(frame, csv_path, num_classes)
    va = np.stack(
        [parse_finite(frame, csv_path, "valence"), parse_finite(frame, csv_path, "arousal")],
        axis=1,
    )
    knn = _parse_knn(frame, csv_path, num_neighbors)
    paths = image_paths(frame, csv_path, image_dir)
    weights = ldl.va_weights(va, va[knn], va_bandwidth)
    return TrainTable(
        paths=paths,
        labels=labels,
        va=va,
        knn=knn,
        va_weights=np.asarray(weights, dtype=np.float32),
    )


def read_eval_table(csv_path, image_dir, *, num_classes: int) -> EvalTable:
    """Reads and validates a test/validation CSV (subDirectory_filePath, expression, and
    optionally distribution).

    Raises:
      DataError: on an invalid label or distribution or a missing image file, naming file, row
        and column.
    """
    csv_path = os.fspath(csv_path)
    frame = read_csv(csv_path, EVAL_COLUMNS)
    labels = parse_labels(frame, csv_path, num_classes)
    distributions = None
    if DISTRIBUTION_COLUMN in frame.columns:
        distributions = parse_distributions(frame, csv_path, num_classes)
    return EvalTable(
        paths=image_paths(frame, csv_path, image_dir), labels=labels, distributions=distributions
    )


def row_error(csv_path: str, row: int, column: str, problem: str) -> DataError:
    return DataError(f"{csv_path}, line {row + 2} (row index {row}), column {column!r}: {problem}")


def read_csv(csv_path: str, required: Sequence[str]) -> pd.DataFrame:
    """Reads every column as text (validation parses it) and checks the required columns."""
    if not os.path.isfile(csv_path):
        raise DataError(f"{csv_path}: file not found.")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError as error:
        raise DataError(f"{csv_path}: the file is empty (no header).") from error
    except pd.errors.ParserError as error:
        raise DataError(f"{csv_path}: not a parsable CSV: {error}") from error
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DataError(
            f"{csv_path}, line 1 (header): missing required column(s) {missing}; "
            f"found {list(frame.columns)}."
        )
    if len(frame) == 0:
        raise DataError(f"{csv_path}: no data rows after the header.")
    return frame


def parse_labels(frame: pd.DataFrame, csv_path: str, num_classes: int) -> np.ndarray:
    text = frame["expression"].str.strip()
    is_int = text.str.fullmatch(r"[+-]?\d+").to_numpy()
    if not is_int.all():
        row = int(np.argmin(is_int))
        raise row_error(csv_path, row, "expression", f"{text.iloc[row]!r} is not an integer.")
    labels = text.to_numpy().astype(np.int64)
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        row = int(np.argmax(outside))
        raise row_error(
            csv_path, row, "expression", f"{labels[row]} is outside [0, {num_classes})."
        )
    return labels.astype(np.int32)


def parse_finite(frame: pd.DataFrame, csv_path: str, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argmin(finite))
        raise row_error(
            csv_path, row, column, f"{frame[column].iloc[row]!r} is not a finite number."
        )
    return values.astype(np.float32)


def parse_distributions(frame: pd.DataFrame, csv_path: str, num_classes: int) -> np.ndarray:
    """(N, C) distributions from ';'-joined floats: C per row, finite, non-negative, summing to
    1 within DISTRIBUTION_SUM_TOLERANCE (rounded values); returned rescaled to sum to 1."""
    rows = []
    for row, text in enumerate(frame[DISTRIBUTION_COLUMN]):
        fields = text.strip().split(";")
        values = pd.to_numeric(pd.Series(fields), errors="coerce").to_numpy(np.float64)
        if len(fields) != num_classes:
            problem = f"{text!r} has {len(fields)} values, expected {num_classes} (one per class)."
        elif not np.isfinite(values).all():
            problem = f"{text!r} is not {num_classes} ';'-joined numbers."
        elif (values < 0).any():
            problem = f"{text!r} has a negative value."
        elif abs(values.sum() - 1.0) > DISTRIBUTION_SUM_TOLERANCE:
            problem = f"{text!r} sums to {values.sum():.6g}, not 1."
        else:
            rows.append(values / values.sum())
            continue
        raise row_error(csv_path, row, DISTRIBUTION_COLUMN, problem)
    return np.stack(rows)


def _parse_knn(frame: pd.DataFrame, csv_path: str, num_neighbors: int) -> np.ndarray:
    """Parses the ';'-joined neighbour lists; returns the first K as (N, K) int32."""
    text = frame["knn"].str.replace(r"\s+", "", regex=True)
    parsable = text.str.fullmatch(r"-?\d+(?:;-?\d+)*").to_numpy()
    if not parsable.all():
        row = int(np.argmin(parsable))
        raise row_error(
            csv_path, row, "knn", f"{frame['knn'].iloc[row]!r} is not a ';'-joined integer list."
        )
    counts = text.str.count(";").to_numpy() + 1
    uneven = counts != counts[0]
    if uneven.any():
        row = int(np.argmax(uneven))
        raise row_error(
            csv_path,
            row,
            "knn",
            f"lists {counts[row]} neighbours but row 0 lists {counts[0]}; "
            "every row must list the same number.",
        )
    if counts[0] < num_neighbors:
        raise row_error(
            csv_path,
            0,
            "knn",
            f"lists {counts[0]} neighbours, fewer than num_neighbors={num_neighbors}.",
        )
    num_rows = len(frame)
    knn = np.array(";".join(text).split(";"), dtype=np.int64).reshape(num_rows, counts[0])
    _check_neighbor_indices(knn, csv_path)
    return knn[:, :num_neighbors].astype(np.int32)


def _check_neighbor_indices(knn: np.ndarray, csv_path: str) -> None:
    """Every listed neighbour must be another row of the same CSV."""
    num_rows = knn.shape[0]
    outside = (knn < 0) | (knn >= num_rows)
    if outside.any():
        row, entry = np.argwhere(outside)[0]
        raise row_error(
            csv_path,
            int(row),
            "knn",
            f"neighbour {knn[row, entry]} (entry {entry}) is not a row index in [0, {num_rows}).",
        )
    itself = knn == np.arange(num_rows)[:, None]
    if itself.any():
        row, entry = np.argwhere(itself)[0]
        raise row_error(csv_path, int(row), "knn", f"lists the row itself (entry {entry}).")


def image_paths(frame: pd.DataFrame, csv_path: str, image_dir) -> np.ndarray:
    """Absolute image paths; every file must exist."""
    image_dir = os.fspath(image_dir)
    relative = frame["subDirectory_filePath"].to_numpy()
    paths = np.array([os.path.abspath(os.path.join(image_dir, name)) for name in relative])
    missing = [row for row, path in enumerate(paths) if not os.path.isfile(path)]
    if missing:
        shown = "; ".join(
            f"line {row + 2} (row index {row}) {relative[row]!r}"
            for row in missing[:_MISSING_IMAGES_SHOWN]
        )
        raise DataError(
            f"{csv_path}, column 'subDirectory_filePath': {len(missing)} of {len(paths)} image "
            f"files are missing under {image_dir!r}, first: {shown}."
        )
    return paths


# ----------------------------------------------------------------------------- VA tables

IMAGE_COLUMN = "subDirectory_filePath"
VA_COLUMNS = ("valence", "arousal")


@dataclasses.dataclass(frozen=True)
class VATable:
    """A validated CSV with images and valence/arousal: (N,) absolute paths, (N, 2) float32."""

    paths: np.ndarray
    va: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.paths)


def read_image_frame(csv_path, image_dir) -> tuple[pd.DataFrame, np.ndarray]:
    """(the CSV as text, (N,) absolute image paths) after checking every image exists.

    Only `subDirectory_filePath` is required; every column is kept as it was written.
    """
    csv_path = os.fspath(csv_path)
    frame = read_csv(csv_path, (IMAGE_COLUMN,))
    return frame, image_paths(frame, csv_path, image_dir)


def read_va_table(csv_path, image_dir) -> VATable:
    """Reads and validates a CSV with `subDirectory_filePath`, `valence` and `arousal`.

    Raises:
      DataError: a missing column, a value that is not a finite number in [-1, 1] (the tanh
        head's range; AffectNet marks invalid rows with -2), or missing images, naming the
        file, the row and the column.
    """
    csv_path = os.fspath(csv_path)
    frame = read_csv(csv_path, (IMAGE_COLUMN, *VA_COLUMNS))
    columns = []
    for column in VA_COLUMNS:
        values = parse_finite(frame, csv_path, column)
        outside = np.abs(values) > 1.0
        if outside.any():
            row = int(np.argmax(outside))
            raise row_error(
                csv_path,
                row,
                column,
                f"{values[row]} is outside [-1, 1] (AffectNet's -2 marks an invalid label: "
                "drop such rows, as tools/prepare_affectnet.py does).",
            )
        columns.append(values)
    paths = image_paths(frame, csv_path, image_dir)
    return VATable(paths=paths, va=np.stack(columns, axis=1).astype(np.float32))
