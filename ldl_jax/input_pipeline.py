"""Reading, decoding, augmenting and batching the LDLVA data (docs/METHOD.md §1).

This is the only module that imports TensorFlow. The pipeline is:

1. `read_train_table` / `read_eval_table` validate a CSV completely (columns, labels,
   valence/arousal, neighbour lists, image files) before any image is decoded.
2. `load_images` decodes every image exactly once, resized bilinearly to the input size,
   into one uint8 array (in memory, or a reusable memmap cache for large sets).
3. `train_batches` gathers central and neighbour images by row index from that array, so
   JPEGs are never re-decoded, and augments every draw freshly with stateless TF ops.
   Batches stay uint8; normalisation happens inside the compiled model step.
4. `eval_batches` walks the test images in order and pads the last batch with a mask.

Train augmentation randomness is a function of (seed, global step) only, never of TF's
global seed or of iteration order, so a run resumed at step k sees exactly the batches an
uninterrupted run sees from step k, and the per-process slices of a multi-process run
concatenate to the single-process global batch.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import hashlib
import itertools
import json
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from ldl_jax import ldl

TRAIN_COLUMNS = ("subDirectory_filePath", "expression", "valence", "arousal", "knn")
EVAL_COLUMNS = ("subDirectory_filePath", "expression")

# Random erasing (Zhong et al.), as configured by the reference: probability, area
# fraction range and the lower bound of the aspect ratio (upper bound 1 / that).
ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.3)
ERASE_MIN_ASPECT = 0.3

_MISSING_IMAGES_SHOWN = 5
_DECODE_BATCH = 64
# Threads building training batches, and how many batches they may build ahead.
_PREFETCH_THREADS = min(4, os.cpu_count() or 1)
_PREFETCH = 2 * _PREFETCH_THREADS


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
    """The validated evaluation CSV: (N,) absolute image paths and (N,) int32 labels."""

    paths: np.ndarray
    labels: np.ndarray


# ----------------------------------------------------------------------------- tables


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
    frame = _read_csv(csv_path, TRAIN_COLUMNS)
    labels = _parse_labels(frame, csv_path, num_classes)
    va = np.stack(
        [_parse_finite(frame, csv_path, "valence"), _parse_finite(frame, csv_path, "arousal")],
        axis=1,
    )
    knn = _parse_knn(frame, csv_path, num_neighbors)
    paths = _image_paths(frame, csv_path, image_dir)
    weights = ldl.va_weights(va, va[knn], va_bandwidth)
    return TrainTable(
        paths=paths,
        labels=labels,
        va=va,
        knn=knn,
        va_weights=np.asarray(weights, dtype=np.float32),
    )


def read_eval_table(csv_path, image_dir, *, num_classes: int) -> EvalTable:
    """Reads and validates a test/validation CSV (subDirectory_filePath, expression).

    Raises:
      DataError: on an invalid label or a missing image file, naming file, row and column.
    """
    csv_path = os.fspath(csv_path)
    frame = _read_csv(csv_path, EVAL_COLUMNS)
    labels = _parse_labels(frame, csv_path, num_classes)
    return EvalTable(paths=_image_paths(frame, csv_path, image_dir), labels=labels)


def _row_error(csv_path: str, row: int, column: str, problem: str) -> DataError:
    return DataError(f"{csv_path}, line {row + 2} (row index {row}), column {column!r}: {problem}")


def _read_csv(csv_path: str, required: Sequence[str]) -> pd.DataFrame:
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


def _parse_labels(frame: pd.DataFrame, csv_path: str, num_classes: int) -> np.ndarray:
    text = frame["expression"].str.strip()
    is_int = text.str.fullmatch(r"[+-]?\d+").to_numpy()
    if not is_int.all():
        row = int(np.argmin(is_int))
        raise _row_error(csv_path, row, "expression", f"{text.iloc[row]!r} is not an integer.")
    labels = text.to_numpy().astype(np.int64)
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        row = int(np.argmax(outside))
        raise _row_error(
            csv_path, row, "expression", f"{labels[row]} is outside [0, {num_classes})."
        )
    return labels.astype(np.int32)


def _parse_finite(frame: pd.DataFrame, csv_path: str, column: str) -> np.ndarray:
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce").to_numpy(np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.argmin(finite))
        raise _row_error(
            csv_path, row, column, f"{frame[column].iloc[row]!r} is not a finite number."
        )
    return values.astype(np.float32)


def _parse_knn(frame: pd.DataFrame, csv_path: str, num_neighbors: int) -> np.ndarray:
    """Parses the ';'-joined neighbour lists; returns the first K as (N, K) int32."""
    text = frame["knn"].str.replace(r"\s+", "", regex=True)
    parsable = text.str.fullmatch(r"-?\d+(?:;-?\d+)*").to_numpy()
    if not parsable.all():
        row = int(np.argmin(parsable))
        raise _row_error(
            csv_path, row, "knn", f"{frame['knn'].iloc[row]!r} is not a ';'-joined integer list."
        )
    counts = text.str.count(";").to_numpy() + 1
    uneven = counts != counts[0]
    if uneven.any():
        row = int(np.argmax(uneven))
        raise _row_error(
            csv_path,
            row,
            "knn",
            f"lists {counts[row]} neighbours but row 0 lists {counts[0]}; "
            "every row must list the same number.",
        )
    if counts[0] < num_neighbors:
        raise _row_error(
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
        raise _row_error(
            csv_path,
            int(row),
            "knn",
            f"neighbour {knn[row, entry]} (entry {entry}) is not a row index in [0, {num_rows}).",
        )
    itself = knn == np.arange(num_rows)[:, None]
    if itself.any():
        row, entry = np.argwhere(itself)[0]
        raise _row_error(csv_path, int(row), "knn", f"lists the row itself (entry {entry}).")


def _image_paths(frame: pd.DataFrame, csv_path: str, image_dir) -> np.ndarray:
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


# ----------------------------------------------------------------------------- decoding


def load_images(
    paths: Sequence[str],
    image_size: int,
    *,
    cache_path=None,
    max_in_memory_bytes: int = 4 << 30,
    num_parallel: int = tf.data.AUTOTUNE,
) -> np.ndarray:
    """Decodes every image once and resizes it bilinearly to (image_size, image_size).

    Grayscale and RGBA images become 3-channel RGB. Values are rounded and clipped to uint8.
    If the array is larger than `max_in_memory_bytes` and `cache_path` is given, it is
    written to a .npy file there and returned memory-mapped (read-only); a later call
    with the same paths and size reuses that file without decoding. Otherwise the array
    is built in memory.

    Args:
      paths: N image file paths.
      image_size: S, the side of the square output.
      cache_path: where to keep a memmap for large sets (its directory is created); a JSON
        sidecar `<cache_path>.json` stores the shape and a fingerprint of the path list.
      max_in_memory_bytes: the largest array built in memory when a cache path is given.
      num_parallel: parallel decode calls.

    Returns:
      (N, S, S, 3) uint8 array (np.ndarray or read-only np.memmap), rows in `paths` order.

    Raises:
      DataError: if a file cannot be read or decoded, naming it and its row index.
    """
    paths = [os.fspath(path) for path in paths]
    shape = (len(paths), image_size, image_size, 3)
    if cache_path is None or int(np.prod(shape)) <= max_in_memory_bytes:
        images = np.empty(shape, np.uint8)
        _decode_into(images, paths, image_size, num_parallel)
        return images
    cache_path = os.fspath(cache_path)
    metadata = {"shape": list(shape), "fingerprint": _fingerprint(paths, image_size)}
    cached = _open_cache(cache_path, metadata)
    if cached is not None:
        return cached
    return _build_cache(cache_path, metadata, paths, image_size, num_parallel)


def resize_uint8(image, image_size: int) -> tf.Tensor:
    """The test transform's resize: bilinear to (S, S), rounded back to uint8."""
    image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _decode_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return resize_uint8(image, image_size)


def _decode_into(out: np.ndarray, paths: list[str], image_size: int, num_parallel: int) -> None:
    """Fills `out` with the decoded images, in order."""
    if not paths:
        return
    dataset = (
        tf.data.Dataset.from_tensor_slices(paths)
        .map(
            functools.partial(_decode_resize, image_size=image_size),
            num_parallel_calls=num_parallel,
            deterministic=True,
        )
        .batch(_DECODE_BATCH)
        .prefetch(1)
    )
    done = 0
    try:
        for batch in dataset.as_numpy_iterator():
            out[done : done + len(batch)] = batch
            done += len(batch)
    except tf.errors.OpError as error:
        row = _first_undecodable(paths, done, image_size)
        raise DataError(
            f"{paths[row]} (row index {row}): cannot read or decode the image: {error.message}"
        ) from error


def _first_undecodable(paths: list[str], start: int, image_size: int) -> int:
    """Finds the failing image one by one; only runs after a batch failed to decode."""
    for row in range(start, len(paths)):
        try:
            _decode_resize(tf.constant(paths[row]), image_size)
        except tf.errors.OpError:
            return row
    return start


def _fingerprint(paths: list[str], image_size: int) -> str:
    digest = hashlib.sha256(f"{image_size}\n".encode())
    for path in paths:
        digest.update(path.encode() + b"\0")
    return digest.hexdigest()


def _open_cache(cache_path: str, metadata: dict) -> np.ndarray | None:
    """Returns the cached memmap if its sidecar and .npy header match, else None."""
    try:
        with open(cache_path + ".json") as file:
            if json.load(file) != metadata:
                return None
        images = np.load(cache_path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if images.shape != tuple(metadata["shape"]) or images.dtype != np.uint8:
        return None
    return images


def _build_cache(
    cache_path: str, metadata: dict, paths: list[str], image_size: int, num_parallel: int
) -> np.ndarray:
    """Decodes into a temporary .npy memmap, then renames data and sidecar into place.

    The sidecar is renamed last: a crash leaves no sidecar that vouches for a partial file.
    """
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    temporary = f"{cache_path}.{os.getpid()}.tmp"
    images = np.lib.format.open_memmap(
        temporary, mode="w+", dtype=np.uint8, shape=tuple(metadata["shape"])
    )
    try:
        _decode_into(images, paths, image_size, num_parallel)
        images.flush()
    except BaseException:
        del images
        os.remove(temporary)
        raise
    del images
    os.replace(temporary, cache_path)
    with open(temporary, "w") as file:
        json.dump(metadata, file)
    os.replace(temporary, cache_path + ".json")
    return np.load(cache_path, mmap_mode="r")


# ----------------------------------------------------------------------------- augmentation


def augment(images, seed, *, pad_size: int, random_erasing: bool) -> tf.Tensor:
    """The docs/METHOD.md §1 training transform of already-resized images, in stateless TF ops.

    In order: random horizontal flip (p=0.5), zero-pad by `pad_size` on each side, random
    crop back to H x W, and if `random_erasing`: with p=0.5 replace a rectangle of area
    fraction U(0.02, 0.3) and aspect ratio (h/w) U(0.3, 1/0.3) by uniform noise. Every image
    gets its own randomness; the same `seed` gives the same result eagerly and in graphs.

    Erasing follows the reference (src/data_utils.py `random_erasing`): h and w are the
    rounded sqrt(area * aspect) and sqrt(area / aspect); the top-left corner is uniform in
    [0, H - h) x [0, W - w) (0 where the rectangle spans the side). The reference redraws
    area and aspect while h or w exceed the image; for square images that never happens
    (area fraction * aspect < 0.3 / 0.3 = 1), so here h and w are only clipped to the
    image, which matters for non-square images alone. The reference fills with float
    U[0, 255); uint8 batches get integers uniform in [0, 255].

    Args:
      images: (n, H, W, 3) uint8.
      seed: shape (2,) integer tensor.
      pad_size: zero padding on each side before the crop.
      random_erasing: whether to apply random erasing (central images only).

    Returns:
      (n, H, W, 3) uint8 tensor.
    """
    images = tf.convert_to_tensor(images)
    return _augment_slice(
        images, seed, 0, tf.shape(images)[0], pad_size=pad_size, random_erasing=random_erasing
    )


def _augment_slice(images, seed, start, total, *, pad_size: int, random_erasing: bool):
    """Augments `images` as rows [start, start + n) of a batch of `total` images.

    Randomness is drawn for the whole batch of `total` and sliced, so the slices that
    different processes augment concatenate to the single-process batch.
    """
    stop = start + tf.shape(images)[0]
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    params = _draw_params(seed, total, height, width, pad_size, random_erasing)
    params = {name: value[start:stop] for name, value in params.items()}
    images = _flip_pad_crop(images, params["flip"], params["offset"], pad_size)
    if random_erasing:
        images = _erase(images, params)
    return images


def _draw_params(seed, total, height, width, pad_size: int, random_erasing: bool) -> dict:
    """Per-image random parameters of the transform for a batch of `total` images."""
    seeds = tf.random.experimental.stateless_split(tf.convert_to_tensor(seed), num=4)
    params = {
        "flip": tf.random.stateless_uniform([total], seeds[0]) < 0.5,
        "offset": tf.random.stateless_uniform(
            [total, 2], seeds[1], minval=0, maxval=2 * pad_size + 1, dtype=tf.int32
        ),
    }
    if random_erasing:
        params.update(_draw_erasing(seeds[2], total, height, width))
        # Each byte of a full-range uint32 is uniform in [0, 255]: one draw per pixel.
        bits = tf.random.stateless_uniform(
            [total, height, width], seeds[3], minval=None, maxval=None, dtype=tf.uint32
        )
        params["noise"] = tf.bitcast(bits, tf.uint8)[..., :3]
    return params


def _draw_erasing(seed, total, height, width) -> dict:
    """Whether, where and how large the erased rectangle of each image is."""
    uniform = tf.random.stateless_uniform([total, 5], seed)
    height_f, width_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    low, high = ERASE_AREA
    area = (low + (high - low) * uniform[:, 1]) * height_f * width_f
    aspect = ERASE_MIN_ASPECT + (1.0 / ERASE_MIN_ASPECT - ERASE_MIN_ASPECT) * uniform[:, 2]
    erase_h = tf.minimum(tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32), height)
    erase_w = tf.minimum(tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32), width)
    return {
        "erase": uniform[:, 0] <= ERASE_PROBABILITY,
        "top": _uniform_start(uniform[:, 3], height - erase_h),
        "left": _uniform_start(uniform[:, 4], width - erase_w),
        "erase_h": erase_h,
        "erase_w": erase_w,
    }


def _uniform_start(uniform, room):
    """An integer uniform in [0, room), or 0 when room is 0 (the reference's rule)."""
    room = tf.maximum(room, 1)
    start = tf.cast(tf.floor(uniform * tf.cast(room, tf.float32)), tf.int32)
    return tf.minimum(start, room - 1)


def _flip_pad_crop(images, flip, offset, pad_size: int):
    """Flip, zero-pad and crop with one pad and one gather per axis.

    The padding is symmetric, so flipping the padded image equals padding the flipped one:
    output column j of a flipped image is padded column W + 2 pad - 1 - (ox + j).
    """
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    padded = tf.pad(images, [[0, 0], [pad_size, pad_size], [pad_size, pad_size], [0, 0]])
    rows = offset[:, :1] + tf.range(height)[None, :]
    cols = offset[:, 1:] + tf.range(width)[None, :]
    cols = tf.where(flip[:, None], width + 2 * pad_size - 1 - cols, cols)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def _erase(images, params):
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows, cols = tf.range(height)[None, :], tf.range(width)[None, :]
    top, left = params["top"][:, None], params["left"][:, None]
    in_rows = (rows >= top) & (rows < top + params["erase_h"][:, None])
    in_cols = (cols >= left) & (cols < left + params["erase_w"][:, None])
    erased = params["erase"][:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]
    return tf.where(erased[..., None], params["noise"], images)


# ----------------------------------------------------------------------------- batches


def steps_per_epoch(num_rows: int, batch_size: int) -> int:
    """Training steps per epoch; the last partial batch is dropped (floor)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    return num_rows // batch_size


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
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite iterator of augmented training batches, starting at global step `start_step`.

    Each epoch visits the rows in the order `np.random.default_rng([seed, epoch])
    .permutation(N)` and drops the last partial batch. Augmentation of global step t is
    seeded by (seed, t), so resuming at step t reproduces an uninterrupted run exactly.
    With several processes, each yields its contiguous slice of every global batch.

    Batches are built ahead on a few threads: a batch-level `np.take` from `images` (no
    decoding) and one compiled TF augmentation call, both of which release the GIL. This is
    deliberately not a tf.data pipeline: gathering from a numpy array or memmap there needs
    `tf.numpy_function`, and an iterator destroyed with such calls in flight (for example
    at interpreter exit) can deadlock on the GIL.

    Args:
      table: the training table.
      images: (N, S, S, 3) uint8 images of the table's rows (array or memmap).
      batch_size: the global batch size B.
      seed: a non-negative integer.
      pad_size: zero padding of the flip/pad/crop transform (4 at 112, 8 at 224).
      start_step: the global step of the first batch.
      process_index: this process's slice of each global batch.
      process_count: the number of processes; must divide `batch_size`.

    Yields:
      dicts of numpy arrays, b = B / process_count: `image` (b, S, S, 3) uint8, flipped,
      cropped and randomly erased; `neighbor_image` (b, K, S, S, 3) uint8, flipped and
      cropped independently, no erasing; `label` (b,) int32; `va_weight` (b, K) float32;
      `index` (b,) int32 row ids; `neighbor_index` (b, K) int32; `neighbor_label` (b, K)
      int32 (training-table labels of the neighbours).
    """
    spe = steps_per_epoch(table.num_rows, batch_size)
    _check_train_args(table, images, spe, seed, batch_size, process_index, process_count)
    local = batch_size // process_count
    first = process_index * local
    augment_batch = _train_augmenter(
        seed, batch_size, first, local, table.knn.shape[1], pad_size, tuple(images.shape[1:])
    )

    @functools.lru_cache(maxsize=4)
    def permutation(epoch: int) -> np.ndarray:
        return np.random.default_rng([seed, epoch]).permutation(table.num_rows)

    def make_batch(step: int) -> dict[str, np.ndarray]:
        epoch, position = divmod(step, spe)
        start = position * batch_size + first
        rows = permutation(epoch)[start : start + local]
        neighbors = table.knn[rows]
        image, neighbor_image = augment_batch(
            np.take(images, rows, axis=0),
            np.take(images, neighbors.reshape(-1), axis=0),
            np.int64(step),
        )
        return {
            "image": image.numpy(),
            "neighbor_image": neighbor_image.numpy(),
            "label": table.labels[rows],
            "va_weight": table.va_weights[rows],
            "index": rows.astype(np.int32),
            "neighbor_index": neighbors,
            "neighbor_label": table.labels[neighbors],
        }

    return _prefetch(make_batch, itertools.count(start_step))


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
        step_seed = tf.stack([tf.constant(seed, tf.int64), step])
        central_seed, neighbor_seed = tf.unstack(
            tf.random.experimental.stateless_split(step_seed, num=2)
        )
        image = _augment_slice(
            image, central_seed, first, batch_size, pad_size=pad_size, random_erasing=True
        )
        neighbor_image = _augment_slice(
            neighbor_image,
            neighbor_seed,
            first * num_neighbors,
            batch_size * num_neighbors,
            pad_size=pad_size,
            random_erasing=False,
        )
        return image, tf.reshape(neighbor_image, (local, num_neighbors, *image_shape))

    return augment_batch


def _prefetch(produce, keys: Iterator) -> Iterator:
    """Yields `produce(key)` for each key in order, computing up to _PREFETCH ahead."""
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


def _check_train_args(table, images, spe, seed, batch_size, process_index, process_count):
    if images.shape[0] != table.num_rows or images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be ({table.num_rows}, S, S, 3) uint8; got {images.shape} {images.dtype}."
        )
    if spe < 1:
        raise ValueError(f"{table.num_rows} rows make no full batch of {batch_size}.")
    if seed < 0:
        raise ValueError(f"seed must be non-negative; got {seed}.")
    if process_count < 1 or batch_size % process_count:
        raise ValueError(
            f"batch_size {batch_size} must be divisible by process_count {process_count}."
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is outside [0, {process_count}).")


def eval_batches(images, labels, *, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Every image exactly once, in order; the last batch is zero-padded and masked.

    Args:
      images: (N, S, S, 3) uint8 (array or memmap).
      labels: (N,) integer labels.
      batch_size: rows per batch.

    Yields:
      dicts with `image` (batch_size, S, S, 3) uint8, `label` (batch_size,) int32 and
      `mask` (batch_size,) bool, True for real rows.
    """
    labels = np.asarray(labels, np.int32)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    for start in range(0, len(labels), batch_size):
        image = np.asarray(images[start : start + batch_size])
        label = labels[start : start + batch_size]
        real = len(label)
        padding = batch_size - real
        yield {
            "image": np.concatenate([image, np.zeros((padding, *image.shape[1:]), np.uint8)]),
            "label": np.concatenate([label, np.zeros(padding, np.int32)]),
            "mask": np.arange(batch_size) < real,
        }


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
