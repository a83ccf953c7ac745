"""Decoding every image once, resized to the input size, into one uint8 array (TensorFlow).

`load_images` decodes in parallel with tf.data, in memory or into a reusable memmap cache for
large sets. `decode_rgb` and `resize_uint8` are its decode and the test transform's resize;
`ldl_jax.predict` calls the same two, so a file gets the same pixels in prediction as in
evaluation.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from ldl_jax import console
from ldl_jax.data.tables import DataError

_DECODE_BATCH = 64


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
    with the same paths and size reuses that file without decoding, and concurrent calls
    (the processes of one run) decode it once, under a lock file `<cache_path>.lock`.
    Otherwise the array is built in memory.

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
    cache_dir = os.path.dirname(os.path.abspath(cache_path))
    created_dir = not os.path.isdir(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    try:
        with _exclusive(cache_path + ".lock"):
            cached = _open_cache(cache_path, metadata)
            if cached is not None:
                return cached
            return _build_cache(cache_path, metadata, paths, image_size, num_parallel)
    except DataError:
        _remove_unused_cache(cache_path, cache_dir if created_dir else None)
        raise


def resize_uint8(image, image_size: int) -> tf.Tensor:
    """The test transform's resize: bilinear to (S, S), rounded back to uint8."""
    image = tf.image.resize(image, (image_size, image_size), method="bilinear")
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def decode_rgb(contents) -> tf.Tensor:
    """(H, W, 3) uint8 of an encoded JPEG, PNG, BMP, WebP or GIF (its first frame); grayscale
    and RGBA become RGB. The pixels are as stored: TensorFlow ignores EXIF orientation."""
    return tf.io.decode_image(contents, channels=3, expand_animations=False)


def _decode_resize(path: tf.Tensor, image_size: int) -> tf.Tensor:
    return resize_uint8(decode_rgb(tf.io.read_file(path)), image_size)


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
        with console.Progress("decode images", len(paths), unit="img") as progress:
            for batch in dataset.as_numpy_iterator():
                out[done : done + len(batch)] = batch
                done += len(batch)
                progress.update(len(batch))
    except tf.errors.OpError as error:
        row, reason = _first_undecodable(paths, done, image_size, error)
        raise DataError(
            f"{paths[row]} (row index {row}): cannot read or decode the image: {reason}"
        ) from error


def _first_undecodable(
    paths: list[str], start: int, image_size: int, error: tf.errors.OpError
) -> tuple[int, str]:
    """(row, reason) of the failing image, found one by one; only runs after a batch that
    failed with `error` (the reason given if no single image fails again)."""
    for row in range(start, len(paths)):
        try:
            _decode_resize(tf.constant(paths[row]), image_size)
        except tf.errors.OpError as own_error:
            return row, op_error_reason(own_error)
    return start, op_error_reason(error)


def op_error_reason(error: tf.errors.OpError) -> str:
    """The reason a TensorFlow op gives, without the function, node and op names around it
    ("{{function_node ...}}", "[[{{node ...}}]]", "[Op:DecodeImage] name:")."""
    reason = re.sub(r"\{\{.*?\}\}|\[\[.*?\]\]|\[Op:\w+\]( name:\S*)?", " ", error.message)
    return " ".join(reason.split())


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


@contextlib.contextmanager
def _exclusive(lock_path: str):
    """Holds an exclusive lock on `lock_path` (created if missing) for the block.

    The processes of a multi-process run that share a cache then build it once: the first
    decodes, the others wait and open its result. On a file system without locks each may
    decode; the temporary file names and renames keep that correct.
    """
    with open(lock_path, "a") as lock:
        with contextlib.suppress(OSError):
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_unused_cache(cache_path: str, created_dir: str | None) -> None:
    """After a failed build: removes the lock file, and the directory made for the cache if
    nothing else is in it, so that a bad image leaves the workdir as it was.

    A process still waiting on the unlinked lock then builds on its own and meets the same
    bad image; the temporary file names and renames of `_build_cache` keep concurrent builds
    correct.
    """
    if os.path.exists(cache_path):
        return  # another process's finished cache: the lock stays with it
    with contextlib.suppress(FileNotFoundError):
        os.remove(cache_path + ".lock")
    if created_dir is not None:
        with contextlib.suppress(OSError):  # not empty: another process's files stay
            os.rmdir(created_dir)


def _build_cache(
    cache_path: str, metadata: dict, paths: list[str], image_size: int, num_parallel: int
) -> np.ndarray:
    """Decodes into a temporary .npy memmap, then renames data and sidecar into place.

    The sidecar is renamed last: a crash leaves no sidecar that vouches for a partial file.
    """
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
