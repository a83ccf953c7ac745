"""Tiny training rows for the ldl_jax.data tests: NUM_ROWS random SIZE-pixel images, valid
training columns (row i lists the next STORED_NEIGHBORS rows cyclically), the table read from
them, and the streams of batches drawn from it."""

import itertools

import numpy as np
import pandas as pd
from PIL import Image

from ldl_jax.data import tables

NUM_ROWS = 12
SIZE = 16
NUM_CLASSES = 3
NUM_NEIGHBORS = 2
STORED_NEIGHBORS = 3
PAD = 2


def random_images(num_rows=NUM_ROWS, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num_rows, size, size, 3), np.uint8)


def train_columns(num_rows=NUM_ROWS):
    """Valid training columns; row i lists the next STORED_NEIGHBORS rows cyclically."""
    va = np.random.default_rng(1).uniform(-1, 1, (num_rows, 2))
    knn = [
        ";".join(str((row + step) % num_rows) for step in range(1, STORED_NEIGHBORS + 1))
        for row in range(num_rows)
    ]
    return {
        "subDirectory_filePath": [f"faces/{row:03d}.png" for row in range(num_rows)],
        "expression": [str(row % NUM_CLASSES) for row in range(num_rows)],
        "valence": [str(float(value)) for value in va[:, 0]],
        "arousal": [str(float(value)) for value in va[:, 1]],
        "knn": knn,
    }


def write_dataset(tmp_path):
    """Writes NUM_ROWS PNGs and returns (write_csv, image_dir, images).

    write_csv(columns=None, name="train.csv", **cell_overrides) writes a CSV with the
    valid columns, cells overridden as column=(row, value), and returns its path.
    """
    images = random_images()
    image_dir = tmp_path / "images"
    (image_dir / "faces").mkdir(parents=True)
    for row, image in enumerate(images):
        Image.fromarray(image).save(image_dir / f"faces/{row:03d}.png")

    def write_csv(columns=None, name="train.csv", **overrides):
        columns = {key: list(value) for key, value in (columns or train_columns()).items()}
        for column, (row, value) in overrides.items():
            columns[column][row] = value
        path = tmp_path / name
        pd.DataFrame(columns).to_csv(path, index=False)
        return path

    return write_csv, image_dir, images


def read_train(csv_path, image_dir):
    return tables.read_train_table(
        csv_path, image_dir, num_classes=NUM_CLASSES, num_neighbors=NUM_NEIGHBORS
    )


def train_table(num_rows=NUM_ROWS):
    """A TrainTable built in memory, for the batch tests."""
    columns = train_columns(num_rows)
    va = np.stack([np.array(columns[key], float) for key in ("valence", "arousal")], 1)
    knn = np.array([row.split(";") for row in columns["knn"]], np.int32)[:, :NUM_NEIGHBORS]
    distance = np.abs(va[:, None] - va[knn]).sum(-1)
    return tables.TrainTable(
        paths=np.array(columns["subDirectory_filePath"]),
        labels=np.array(columns["expression"], np.int32),
        va=va.astype(np.float32),
        knn=knn,
        va_weights=np.exp(-distance / 0.5).astype(np.float32),
    )


def train_stream(table, images, **kwargs):
    """`streams.train_batches` with batches of 4, seed 3 and PAD unless `kwargs` say otherwise
    (imports TensorFlow)."""
    from ldl_jax.data import streams

    kwargs = {"batch_size": 4, "seed": 3, "pad_size": PAD, **kwargs}
    return streams.train_batches(table, images, **kwargs)


def take(iterator, count):
    return list(itertools.islice(iterator, count))


def assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
