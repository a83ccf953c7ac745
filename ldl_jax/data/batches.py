"""Batch bookkeeping without TensorFlow: epochs, per-process slices, padding, prefetching.

Training visits epoch e in the order `np.random.default_rng([seed, e]).permutation(N)` and
drops the last partial batch (`step_rows`); evaluation walks a set in order and pads the last
batch with a mask (`eval_batches`). With several processes each takes its contiguous slice of
every global batch, for training and evaluation alike.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import os
from collections.abc import Callable, Iterator

import jax
import numpy as np

# Threads building training batches, and how many batches they may build ahead.
_PREFETCH_THREADS = min(4, os.cpu_count() or 1)
_PREFETCH = 2 * _PREFETCH_THREADS


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
    """Training steps per epoch; the last partial batch is dropped (floor)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    return num_rows // batch_size


def process_share(batch_size: int, process_index: int, process_count: int) -> tuple[int, int]:
    """(first row, rows) of this process's contiguous slice of a global batch."""
    if process_count < 1 or batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} must be divisible by process_count {process_count}."
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is outside [0, {process_count}).")
    local = batch_size // process_count
    return process_index * local, local


def step_rows(
    num_rows: int,
    *,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Callable[[int], np.ndarray]:
    """`rows(step)`: this process's row indices of the global training batch of `step`.

    Epoch e visits the rows in `np.random.default_rng([seed, e]).permutation(num_rows)` order
    and drops the last partial batch.
    """
    spe = steps_per_epoch(num_rows, batch_size)
    if spe < 1:
        raise ValueError(f"{num_rows} rows make no full batch of {batch_size}.")
    if seed < 0:
        raise ValueError(f"seed must be non-negative; got {seed}.")
    first, local = process_share(batch_size, process_index, process_count)

    @functools.lru_cache(maxsize=4)
    def permutation(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(num_rows)

    def rows(step: int) -> np.ndarray:
        epoch, position = divmod(step, spe)
        start = position * batch_size + first
        return permutation(epoch)[start : start + local]

    return rows


def train_fields(table, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Everything of an LDLVA training batch of `rows` but its images.

    Args:
      table: a `tables.TrainTable`.
      rows: (b,) row indices.

    Returns:
      `label` (b,) int32; `va_weight` (b, K) float32; `index` (b,) int32 row ids;
      `neighbor_index` (b, K) int32; `neighbor_label` (b, K) int32 (the neighbours' labels).
    """
    neighbors = table.knn[rows]
    return {
        "label": table.labels[rows],
        "va_weight": table.va_weights[rows],
        "index": rows.astype(np.int32),
        "neighbor_index": neighbors,
        "neighbor_label": table.labels[neighbors],
    }


def index_batches(
    table,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """This process's `train_fields` of every global training batch from `start_step`: the
    batches of `streams.train_batches` without their images, for images that live on the
    devices (`ldl_jax.data.feeds`)."""
    rows_of = step_rows(
        table.num_rows,
        batch_size=batch_size,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
    )
    return (train_fields(table, rows_of(step)) for step in itertools.count(start_step))


def check_images(images: np.ndarray, num_rows: int) -> None:
    """`images` must be the (num_rows, S, S, 3) uint8 images of a table's rows."""
    if images.shape[0] != num_rows or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be ({num_rows}, S, S, 3) uint8; got {images.shape} {images.dtype}."
        )


def prefetch(produce: Callable, keys: Iterator) -> Iterator:
    """Yields `produce(key)` for each key in order, computing up to _PREFETCH ahead on threads."""
    with concurrent.futures.ThreadPoolExecutor(_PREFETCH_THREADS) as executor:
        pending = collections.deque(
            executor.submit(produce, key) for key in itertools.islice(keys, _PREFETCH)
        )
        try:
            while pending:
                result = pending.popleft().result()
                pending.extend(executor.submit(produce, key) for key in itertools.islice(keys, 1))
                yield result
        finally:
            for future in pending:
                future.cancel()


def prefetch_to_device(
    batches: Iterator[dict], place: Callable = jax.device_put, size: int = 2
) -> Iterator[dict]:
    """Keeps `size` batches, placed by `place`, in flight to the devices while the step runs."""
    queue = collections.deque()
    for batch in batches:
        queue.append(place(batch))
        if len(queue) == size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def eval_batches(
    images,
    labels,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Every image exactly once, in order; the last batch is zero-padded and masked.

    Args:
      images: (N, S, S, 3) uint8 (array or memmap).
      labels: (N,) integer labels.
      batch_size: rows per global batch.
      process_index, process_count: with several processes, each yields its contiguous slice
        of every global batch (as in training).

    Yields:
      dicts with `image` (b, S, S, 3) uint8, `label` (b,) int32 and `mask` (b,) bool, True for
      real rows; b = batch_size / process_count.
    """
    labels = np.asarray(labels, np.int32)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    first, local = process_share(batch_size, process_index, process_count)
    for start in range(0, len(labels), batch_size):
        image = np.asarray(images[start : start + batch_size])
        label = labels[start : start + batch_size]
        real = len(label)
        padding = batch_size - real
        batch = {
            "image": np.concatenate([image, np.zeros((padding, *image.shape[1:]), np.uint8)]),
            "label": np.concatenate([label, np.zeros(padding, np.int32)]),
            "mask": np.arange(batch_size) < real,
        }
        yield {name: value[first : first + local] for name, value in batch.items()}


def class_balanced_weights(labels, num_classes: int) -> np.ndarray:
    """sklearn's "balanced" class weights N / (C * n_c) as (C,) float32.

    Raises:
      ValueError: if a class has no sample (its weight would be infinite).
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}).")
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        raise ValueError(f"class(es) {empty.tolist()} have no training sample.")
    return (labels.size / (num_classes * counts)).astype(np.float32)
