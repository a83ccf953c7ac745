"""A procedural facial-expression dataset, so that training needs no download.

Every sample gets one of the 7 basic expressions (AffectNet order: 0 Neutral,
1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger), a valence and arousal
drawn near that expression's place on the circumplex, and a cartoon face whose
mouth, eyes and brows follow partly the expression and partly the valence and
arousal. Faces of classes that sit close in VA space therefore look alike, and
some samples mix two expressions, so the classes overlap the way real ones do.
Face shape, skin, hair, pose, lighting, noise, occluders and background vary
independently of the label.

The files follow the reference repository's layout::

    out_dir/images/train/00000.jpg ...
    out_dir/images/test/00000.jpg ...
    out_dir/images/val/00000.jpg ...   (only when num_val > 0)
    out_dir/train.csv   subDirectory_filePath, expression, valence, arousal, knn, distribution
    out_dir/test.csv    subDirectory_filePath, expression, valence, arousal, distribution
    out_dir/val.csv     same columns as test.csv

``knn`` lists the ``num_neighbors`` nearest other training rows in VA space
(L1 distance on the values as written, nearest first, ties by row index).
``distribution`` is a crowd's label distribution, as RAF-DB ships one per image
(see ``crowd_distribution``), so that evaluation reports the LDL measures.
Everything is a pure function of the seed: each sample draws from its own
random generator keyed by (seed, split, index). This module samples labels, valence/arousal
and expression parameters and writes the files; `ldl_jax.synthetic_faces` draws the faces.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ldl_jax.synthetic_faces import Expression, render_face
from ldl_jax.va_knn import format_knn_column, knn_in_va_space

CLASS_NAMES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")
NUM_CLASSES = len(CLASS_NAMES)

# Split name -> key mixed into every random stream of that split, so adding a
# validation split leaves the training and test samples unchanged.
_SPLIT_KEYS = {"train": 0, "test": 1, "val": 2}

# Share of each class in a split, by name of the class balance. "default" is mildly
# imbalanced; "rafdb" follows RAF-DB's training split (12,271 images: Happy 39%, Fear 2.3%),
# the imbalance under which a method must not sacrifice the rare classes.
CLASS_BALANCES = {
    "default": np.array([0.19, 0.27, 0.12, 0.11, 0.08, 0.09, 0.14]),
    "rafdb": np.array([2524, 4772, 1982, 1290, 281, 717, 705]) / 12271,
}

# Circumplex centre (valence, arousal) and spread of each class.
_VA_CENTERS = np.array(
    [
        [0.00, 0.00],  # Neutral
        [0.65, 0.30],  # Happy
        [-0.60, -0.35],  # Sad
        [0.15, 0.70],  # Surprise
        [-0.50, 0.70],  # Fear
        [-0.65, 0.30],  # Disgust
        [-0.55, 0.55],  # Anger
    ]
)
_VA_SPREAD = np.array([0.14, 0.18, 0.17, 0.16, 0.15, 0.15, 0.16])


_NUM_FEATURES = len(dataclasses.fields(Expression))

# Prototype action parameters per class, columns in Expression field order.
_CLASS_FEATURES = np.array(
    [
        [0.00, 0.00, 1.00, 1.00, 0.00, 0.00, 0.0, 0.0, 0.0],  # Neutral
        [1.00, 0.45, 1.20, 0.70, 0.10, -0.10, 1.0, 0.0, 0.0],  # Happy
        [-0.80, 0.05, 0.90, 0.75, 0.10, -0.80, 0.0, 0.0, 0.0],  # Sad
        [0.00, 1.00, 0.70, 1.50, 1.00, -0.20, 0.0, 0.0, 0.0],  # Surprise
        [-0.30, 0.60, 1.25, 1.40, 0.60, -0.70, 0.5, 0.0, 0.0],  # Fear
        [-0.40, 0.20, 0.95, 0.65, -0.30, 0.40, 0.4, 1.0, 1.0],  # Disgust
        [-0.50, 0.15, 0.90, 0.70, -0.40, 1.00, 0.6, 0.2, 0.0],  # Anger
    ]
)

# Per-feature standard deviation of the sample-to-sample jitter.
_FEATURE_JITTER = np.array([0.22, 0.12, 0.10, 0.14, 0.20, 0.22, 0.25, 0.25, 0.25])

# Weight of the valence-arousal driven part of the features (the rest is the
# class prototype). Larger values make classes close in VA look more alike.
_VA_COUPLING = 0.35

# Chance that a sample's face mixes in a second, VA-nearby expression, and the
# range of that expression's weight: these are the genuinely ambiguous faces.
_BLEND_PROBABILITY = 0.3
_BLEND_WEIGHT_RANGE = (0.15, 0.55)
# Temperature (in VA units) of the choice of the second expression.
_BLEND_TEMPERATURE = 0.4

_JPEG_QUALITY = 95
_MIN_IMAGE_SIZE = 16


def _fit_va_to_features() -> np.ndarray:
    """Fits the affine map from (1, valence, arousal) to class features.

    Returns:
        (3, F) least-squares coefficients over the class prototypes, so that
        ``[1, v, a] @ coefficients`` gives the features a face "at" (v, a)
        would have regardless of its class.
    """
    design = np.column_stack([np.ones(NUM_CLASSES), _VA_CENTERS])
    coefficients, *_ = np.linalg.lstsq(design, _CLASS_FEATURES, rcond=None)
    return coefficients


_VA_TO_FEATURES = _fit_va_to_features()


def make_synthetic_fer(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_train: int = 2000,
    num_test: int = 500,
    num_val: int = 0,
    image_size: int = 64,
    num_neighbors: int = 20,
    class_balance: str = "default",
) -> dict:
    """Generates the synthetic FER dataset into ``out_dir``.

    The dataset is written into a temporary folder next to ``out_dir`` and
    renamed into place at the end, so an interrupted run never leaves a
    complete-looking half dataset.

    Args:
        out_dir: Folder to create; must not exist or be empty.
        seed: Non-negative seed of every random choice; equal seeds give
            equal files.
        num_train: Training images.
        num_test: Test images.
        num_val: Validation images; no validation split when 0.
        image_size: Side of the square RGB images in pixels.
        num_neighbors: VA neighbours stored per training row.
        class_balance: A key of ``CLASS_BALANCES``: the share of each class.

    Returns:
        Summary with ``out_dir``, ``image_dir``, ``csv`` (split -> CSV path),
        ``counts`` (split -> images) and ``class_counts`` (split -> images per
        class, in class order).

    Raises:
        ValueError: If ``out_dir`` exists and is not an empty folder, or an
            argument is out of range.
    """
    _check_arguments(seed, num_train, num_test, num_val, image_size, num_neighbors)
    if class_balance not in CLASS_BALANCES:
        raise ValueError(f"class_balance={class_balance!r} is not one of {sorted(CLASS_BALANCES)}")
    frequencies = CLASS_BALANCES[class_balance]
    out_path = Path(out_dir)
    _check_output_folder(out_path)
    split_sizes = {"train": num_train, "test": num_test}
    if num_val > 0:
        split_sizes["val"] = num_val

    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        class_counts = {
            split: _write_split(staging, split, size, seed, image_size, num_neighbors, frequencies)
            for split, size in split_sizes.items()
        }
        if out_path.exists():
            out_path.rmdir()
        staging.rename(out_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    return {
        "out_dir": str(out_path),
        "image_dir": str(out_path / "images"),
        "csv": {split: str(out_path / f"{split}.csv") for split in split_sizes},
        "counts": dict(split_sizes),
        "class_counts": class_counts,
    }


def _check_arguments(
    seed: int,
    num_train: int,
    num_test: int,
    num_val: int,
    image_size: int,
    num_neighbors: int,
) -> None:
    """Raises ValueError for a seed, split size or option that cannot work."""
    if seed < 0:
        raise ValueError(f"seed must not be negative; got {seed}.")
    if num_neighbors < 1:
        raise ValueError(f"num_neighbors must be at least 1; got {num_neighbors}.")
    if num_train <= num_neighbors:
        raise ValueError(
            f"num_train ({num_train}) must exceed num_neighbors ({num_neighbors}): "
            "every training row needs that many other rows as neighbours."
        )
    if num_test < 1:
        raise ValueError(f"num_test must be at least 1; got {num_test}.")
    if num_val < 0:
        raise ValueError(f"num_val must not be negative; got {num_val}.")
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE}; got {image_size}.")


def _check_output_folder(out_path: Path) -> None:
    """Refuses an output path that holds anything already."""
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise ValueError(
            f"Output folder {out_path} already exists and is not empty; "
            "choose a new folder or remove the old dataset first."
        )


def _write_split(
    root: Path,
    split: str,
    size: int,
    seed: int,
    image_size: int,
    num_neighbors: int,
    frequencies: np.ndarray,
) -> list[int]:
    """Renders one split's images and writes its CSV.

    Returns:
        Images per class, in class order.
    """
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    labels = _split_labels(seed, split, size, frequencies)
    rows = []
    for index, label in enumerate(labels):
        rng = _sample_rng(seed, split, index)
        valence, arousal = _sample_valence_arousal(rng, label)
        expression = _sample_expression(rng, label, valence, arousal)
        pixels = render_face(rng, expression, image_size)
        file_name = f"{index:05d}.jpg"
        Image.fromarray(pixels).save(image_dir / file_name, quality=_JPEG_QUALITY)
        rows.append([f"{split}/{file_name}", str(label), _format_va(valence), _format_va(arousal)])

    header = ["subDirectory_filePath", "expression", "valence", "arousal"]
    if split == "train":
        header.append("knn")
        va_as_written = np.array([[float(row[2]), float(row[3])] for row in rows])
        knn = knn_in_va_space(va_as_written, num_neighbors)
        for row, neighbours in zip(rows, format_knn_column(knn), strict=True):
            row.append(neighbours)
    _add_distribution_column(header, rows)
    _write_csv(root / f"{split}.csv", header, rows)
    return np.bincount(labels, minlength=NUM_CLASSES).tolist()


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Writes a CSV with Unix line endings."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _format_va(value: float) -> str:
    """Formats a valence or arousal value with 4 decimals, never as -0.0000."""
    return f"{round(value, 4) + 0.0:.4f}"


def _split_labels(seed: int, split: str, size: int, frequencies: np.ndarray) -> np.ndarray:
    """Returns the shuffled class labels of a split.

    Class counts follow ``frequencies`` by largest remainder, with at
    least one image per class whenever the split holds 7 or more.
    """
    counts = _class_counts(size, frequencies)
    labels = np.repeat(np.arange(NUM_CLASSES), counts)
    order_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEYS[split],)))
    return order_rng.permutation(labels)


def _class_counts(size: int, frequencies: np.ndarray) -> np.ndarray:
    """Splits ``size`` images over the classes by largest remainder."""
    minimum = 1 if size >= NUM_CLASSES else 0
    spare = size - minimum * NUM_CLASSES
    shares = frequencies / frequencies.sum() * spare
    counts = np.floor(shares).astype(np.int64)
    remainder_order = np.argsort(-(shares - counts), kind="stable")
    counts[remainder_order[: spare - counts.sum()]] += 1
    return counts + minimum


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Returns the random generator owned by one sample."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEYS[split], index))
    return np.random.default_rng(sequence)


def _sample_valence_arousal(rng: np.random.Generator, label: int) -> tuple[float, float]:
    """Draws a (valence, arousal) pair near the class's circumplex centre."""
    va = rng.normal(_VA_CENTERS[label], _VA_SPREAD[label])
    valence, arousal = np.clip(va, -1.0, 1.0)
    return float(valence), float(arousal)


def _sample_expression(
    rng: np.random.Generator, label: int, valence: float, arousal: float
) -> Expression:
    """Draws the facial action parameters of one sample.

    The parameters mix the class prototype, the features implied by the
    sample's valence and arousal, sometimes a second expression chosen among
    the classes nearby in VA space, and per-feature jitter.
    """
    prototype = _CLASS_FEATURES[label]
    if rng.random() < _BLEND_PROBABILITY:
        other = _nearby_other_class(rng, label)
        weight = rng.uniform(*_BLEND_WEIGHT_RANGE)
        prototype = (1.0 - weight) * prototype + weight * _CLASS_FEATURES[other]
    va_features = np.array([1.0, valence, arousal]) @ _VA_TO_FEATURES
    features = (1.0 - _VA_COUPLING) * prototype + _VA_COUPLING * va_features
    features = features + rng.normal(0.0, _FEATURE_JITTER)
    return Expression(*features.tolist())


def _nearby_other_class(rng: np.random.Generator, label: int) -> int:
    """Picks another class, the closer in VA space the likelier."""
    distances = np.abs(_VA_CENTERS - _VA_CENTERS[label]).sum(axis=1)
    weights = np.exp(-distances / _BLEND_TEMPERATURE)
    weights[label] = 0.0
    return int(rng.choice(NUM_CLASSES, p=weights / weights.sum()))


# Share of the synthetic crowd's votes that go to the sample's own label; the rest spread over
# the classes by closeness in VA space (the neighbourhood the blended expressions come from).
_CROWD_AGREEMENT = 0.6


def crowd_distribution(label: int, valence: float, arousal: float) -> np.ndarray:
    """The (C,) label distribution a crowd of annotators would give a sample: a pure function of
    its label and written valence/arousal, so no random stream is drawn from."""
    distances = np.abs(_VA_CENTERS - [valence, arousal]).sum(axis=1)
    closeness = np.exp(-distances / _BLEND_TEMPERATURE)
    votes = (1.0 - _CROWD_AGREEMENT) * closeness / closeness.sum()
    votes[label] += _CROWD_AGREEMENT
    return votes


def _add_distribution_column(header: list[str], rows: list[list[str]]) -> None:
    """Appends each row's `crowd_distribution` (';'-joined, 6 decimals) as the last column."""
    header.append("distribution")
    for row in rows:
        votes = crowd_distribution(int(row[1]), float(row[2]), float(row[3]))
        row.append(";".join(f"{vote:.6f}" for vote in votes))
