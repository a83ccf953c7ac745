"""The infinite streams of augmented training batches, LDLVA's and the VA regressor's.

A batch gathers its rows' images from the decoded uint8 array (`np.take`, no decoding) and
augments them in one compiled TF call (`ldl_jax.data.augment`), both of which release the GIL,
on a few threads ahead of the step (`batches.prefetch`). Augmentation of global step t is
seeded by (seed, t), so a run resumed at step t sees exactly the batches an uninterrupted run
sees, and the per-process slices of a multi-process run concatenate to the global batch.

This is deliberately not a tf.data pipeline: gathering from a numpy array or memmap there needs
`tf.numpy_function`, and an iterator destroyed with such calls in flight (for example at
interpreter exit) can deadlock on the GIL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from ldl_jax.data import augment, batches
from ldl_jax.data.tables import TrainTable, VATable


def train_batches(
    table: TrainTable,
    images: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    pad_size: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    neighbor_images: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of augmented LDLVA training batches from global step `start_step`.

    Args:
      table: the training table.
      images: (N, S, S, 3) uint8 images of the table's rows (array or memmap).
      batch_size: the global batch size B.
      seed: a non-negative integer.
      pad_size: zero padding of the flip/pad/crop transform (4 at 112, 8 at 224).
      start_step: the global step of the first batch.
      process_index: this process's slice of each global batch.
      process_count: the number of processes; must divide `batch_size`.
      neighbor_images: False leaves out `neighbor_image` (the neighbour memory bank replaces
        it); the other fields, central images included, are unchanged.

    Yields:
      dicts of numpy arrays, b = B / process_count: `image` (b, S, S, 3) uint8, flipped,
      cropped and randomly erased; `neighbor_image` (b, K, S, S, 3) uint8, flipped and
      cropped independently, no erasing (if `neighbor_images`); `label` (b,) int32;
      `va_weight` (b, K) float32; `index` (b,) int32 row ids; `neighbor_index` (b, K) int32;
      `neighbor_label` (b, K) int32 (training-table labels of the neighbours).
    """
    batches.check_images(images, table.num_rows)
    rows_of = batches.step_rows(
        table.num_rows,
        batch_size=batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    first, local = batches.process_share(batch_size, process_index, process_count)
    image_shape = tuple(images.shape[1:])
    if neighbor_images:
        augment_batch = _train_augmenter(
            seed, batch_size, first, local, table.knn.shape[1], pad_size, image_shape
        )
    else:
        augment_central = _central_augmenter(seed, batch_size, first, local, pad_size, image_shape)

    def make_batch(step: int) -> dict[str, np.ndarray]:
        rows = rows_of(step)
        fields = batches.train_fields(table, rows)
        central = np.take(images, rows, axis=0)
        if not neighbor_images:
            return {"image": augment_central(central, np.int64(step)).numpy(), **fields}
        image, neighbor_image = augment_batch(
            central,
            np.take(images, fields["neighbor_index"].reshape(-1), axis=0),
            np.int64(step),
        )
        return {"image": image.numpy(), "neighbor_image": neighbor_image.numpy(), **fields}

    return batches.prefetch(make_batch, itertools.count(start_step))


def _train_augmenter(seed, batch_size, first, local, num_neighbors, pad_size, image_shape):
    """Compiles the augmentation of one process's slice of a global training batch.

    Central and neighbour images draw from separate streams, each split from (seed, step)
    and drawn for the whole global batch, then sliced at this process's rows.
    """
    signature = [
        tf.TensorSpec((local, *image_shape), tf.uint8),
        tf.TensorSpec((local * num_neighbors, *image_shape), tf.uint8),
        tf.TensorSpec((), tf.int64),
    ]

    @tf.function(input_signature=signature)
    def augment_batch(image, neighbor_image, step):
        central_seed, neighbor_seed = augment.step_seeds(seed, step)
        image = augment.augment_slice(
            image, central_seed, first, batch_size, pad_size=pad_size, random_erasing=True
        )
        neighbor_image = augment.augment_slice(
            neighbor_image,
            neighbor_seed,
            first * num_neighbors,
            batch_size * num_neighbors,
            pad_size=pad_size,
            random_erasing=False,
        )
        return image, tf.reshape(neighbor_image, (local, num_neighbors, *image_shape))

    return augment_batch


def _central_augmenter(seed, batch_size, first, local, pad_size, image_shape):
    """Compiles the augmentation of one process's slice of a global batch's central images
    alone: the same draws as `_train_augmenter`'s central images."""

    @tf.function(
        input_signature=[
            tf.TensorSpec((local, *image_shape), tf.uint8),
            tf.TensorSpec((), tf.int64),
        ]
    )
    def augment_central(image, step):
        central_seed, _ = augment.step_seeds(seed, step)
        return augment.augment_slice(
            image, central_seed, first, batch_size, pad_size=pad_size, random_erasing=True
        )

    return augment_central


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
    """Infinite iterator of augmented VA regression batches from global step `start_step`.

    The rows and the central images' augmentation of `train_batches` for the same (seed, step),
    with each process's contiguous slice of every global batch.

    Yields:
      dicts with `image` (b, S, S, 3) uint8 (flipped, pad-cropped, randomly erased) and `va`
      (b, 2) float32, b = batch_size / process_count.
    """
    batches.check_images(images, table.num_rows)
    rows_of = batches.step_rows(
        table.num_rows,
        batch_size=batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    first, local = batches.process_share(batch_size, process_index, process_count)
    augment_batch = _central_augmenter(
        seed, batch_size, first, local, pad_size, tuple(images.shape[1:])
    )

    def make_batch(step: int) -> dict[str, np.ndarray]:
        rows = rows_of(step)
        image = augment_batch(np.take(images, rows, axis=0), np.int64(step))
        return {"image": image.numpy(), "va": table.va[rows]}

    return batches.prefetch(make_batch, itertools.count(start_step))
