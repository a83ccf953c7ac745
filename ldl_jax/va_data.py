"""Tables and batches of valence/arousal regression, on top of `ldl_jax.input_pipeline`.

Reading reuses the input pipeline's CSV checks (columns, finite numbers, image files, errors
that name file, line and column); decoding is `input_pipeline.load_images`; training batches
get the LDL central images' augmentation (flip, pad-crop, random erasing) from the same
stateless TF ops, seeded by (seed, step), so a resumed run sees the batches an uninterrupted
one sees. Evaluation reuses `input_pipeline.eval_batches` (padded, masked).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import tensorflow as tf

from ldl_jax import input_pipeline

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
    frame = input_pipeline._read_csv(csv_path, (IMAGE_COLUMN,))
    return frame, input_pipeline._image_paths(frame, csv_path, image_dir)


def read_va_table(csv_path, image_dir) -> VATable:
    """Reads and validates a CSV with `subDirectory_filePath`, `valence` and `arousal`.

    Raises:
      DataError: a missing column, a value that is not a finite number in [-1, 1] (the tanh
        head's range; AffectNet marks invalid rows with -2), or missing images, naming the
        file, the row and the column.
    """
    csv_path = os.fspath(csv_path)
    frame = input_pipeline._read_csv(csv_path, (IMAGE_COLUMN, *VA_COLUMNS))
    columns = []
    for column in VA_COLUMNS:
        values = input_pipeline._parse_finite(frame, csv_path, column)
        outside = np.abs(values) > 1.0
        if outside.any():
            row = int(np.argmax(outside))
            raise input_pipeline._row_error(
                csv_path,
                row,
                column,
                f"{values[row]} is outside [-1, 1] (AffectNet's -2 marks an invalid label: "
                "drop such rows, as tools/prepare_affectnet.py does).",
            )
        columns.append(values)
    paths = input_pipeline._image_paths(frame, csv_path, image_dir)
    return VATable(paths=paths, va=np.stack(columns, axis=1).astype(np.float32))


def va_train_batches(
    table: VATable,
    images: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    pad_size: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of augmented batches from global step `start_step`.

    Epoch e visits the rows in `np.random.default_rng([seed, e]).permutation(N)` order and
    drops the last partial batch, as `input_pipeline.train_batches`. Each process yields its
    contiguous slice of every global batch.

    Yields:
      dicts with `image` (b, S, S, 3) uint8 (flipped, pad-cropped, randomly erased) and `va`
      (b, 2) float32, b = batch_size / process_count.
    """
    if images.shape[0] != table.num_rows or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be ({table.num_rows}, S, S, 3) uint8; got {images.shape} {images.dtype}."
        )
    spe = input_pipeline.steps_per_epoch(table.num_rows, batch_size)
    if spe < 1:
        raise ValueError(f"{table.num_rows} rows make no full batch of {batch_size}.")
    if seed < 0:
        raise ValueError(f"seed must be non-negative; got {seed}.")
    if process_count < 1 or batch_size % process_count or not 0 <= process_index < process_count:
        raise ValueError(
            f"process {process_index} of {process_count} cannot take a share of {batch_size}."
        )
    local = batch_size // process_count
    first = process_index * local

    @tf.function(
        input_signature=[
            tf.TensorSpec((local, *images.shape[1:]), tf.uint8),
            tf.TensorSpec((), tf.int64),
        ]
    )
    def augment(image, step):
        step_seed = tf.stack([tf.constant(seed, tf.int64), step])
        # The central-image stream of `input_pipeline.train_batches` for the same (seed, step).
        central_seed = tf.random.experimental.stateless_split(step_seed, num=2)[0]
        return input_pipeline._augment_slice(
            image, central_seed, first, batch_size, pad_size=pad_size, random_erasing=True
        )

    @functools.lru_cache(maxsize=4)
    def permutation(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(table.num_rows)

    def make_batch(step: int) -> dict[str, np.ndarray]:
        epoch, position = divmod(step, spe)
        start = position * batch_size + first
        rows = permutation(epoch)[start : start + local]
        image = augment(np.take(images, rows, axis=0), np.int64(step))
        return {"image": image.numpy(), "va": table.va[rows]}

    return input_pipeline._prefetch(make_batch, itertools.count(start_step))


def image_batches(images, *, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every image once, in order, the last batch zero-padded: `image` and `mask`."""
    for batch in input_pipeline.eval_batches(images, np.zeros(len(images)), batch_size=batch_size):
        yield {"image": batch["image"], "mask": batch["mask"]}
