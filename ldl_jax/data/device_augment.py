"""The training transform in JAX, for images that live on the accelerators (no TensorFlow).

The same transform as the host path's `ldl_jax.data.augment` (docs/METHOD.md §1), written the
same way: per-image parameters are drawn (`draw_params`), then applied (`transform_rows`).
Given the same parameters both produce the same pixels; the draws follow the same
distributions (tests/data/test_device_augment.py checks both).

Randomness comes from (seed, step) alone, as on the host: `image_keys` gives every image of a
step its own key, folded from the step's key and the image's training row (and, for a
neighbour, its central row and its rank k), so the draws do not depend on how the batch is
split over devices or processes, and a resumed run draws what an uninterrupted one drew.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# Random erasing (Zhong et al.), as configured by the reference: probability, area
# fraction range and the lower bound of the aspect ratio (upper bound 1 / that).
ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.3)
ERASE_MIN_ASPECT = 0.3

# Folded into the seed's key first: the augmentation's own stream, apart from the model's
# (train_state splits the seed's key for initialisation and dropout).
_AUGMENT_STREAM = 0x61756731


def step_keys(seed: int, step) -> tuple[jax.Array, jax.Array]:
    """(central, neighbour) keys of global training step `step`, from (seed, step) only."""
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), _AUGMENT_STREAM), step)
    central, neighbor = jax.random.split(key)
    return central, neighbor


def image_keys(key, index, num_neighbors: int | None = None) -> jax.Array:
    """One key per image: (b,) for the central rows `index`, or with `num_neighbors` K
    (b, K) for their neighbours (keyed by the central row and the rank k)."""
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, index)
    if num_neighbors is None:
        return keys
    ranks = jnp.arange(num_neighbors)
    return jax.vmap(jax.vmap(jax.random.fold_in, (None, 0)), (0, None))(keys, ranks)


def draw_params(keys, height: int, width: int, pad_size: int, random_erasing: bool) -> dict:
    """Per-image parameters of the transform, one image per key in the (n,) `keys`.

    Returns `flip` (n,) bool, `offset` (n, 2) int32 (crop rows, columns in the padded image)
    and with `random_erasing`: `erase` (n,) bool, `top`, `left`, `erase_h`, `erase_w` (n,)
    int32 and `noise` (n, H, W, 3) uint8; the fields and meaning of the host's draws.
    """

    def draw(key):
        flip_key, offset_key, erase_key, noise_key = jax.random.split(key, 4)
        params = {
            "flip": jax.random.uniform(flip_key) < 0.5,
            "offset": jax.random.randint(offset_key, (2,), 0, 2 * pad_size + 1, jnp.int32),
        }
        if random_erasing:
            params.update(_erasing(jax.random.uniform(erase_key, (5,)), height, width))
            params["noise"] = _uniform_bytes(noise_key, (height, width, 3))
        return params

    return jax.vmap(draw)(keys)


def _uniform_bytes(key, shape) -> jax.Array:
    """uint8 uniform in [0, 255]: the bytes of uniform uint32 words (4 bytes a draw, several
    times faster than a uint8 `jax.random.bits`, which draws a word per byte)."""
    size = math.prod(shape)
    words = jax.random.bits(key, (-(-size // 4),), jnp.uint32)
    return jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(-1)[:size].reshape(shape)


def _erasing(uniform, height: int, width: int) -> dict:
    """Whether, where and how large the erased rectangle is, from 5 uniforms (the host's
    formulas: h and w rounded half to even and clipped to the image, the corner uniform over
    the positions where the rectangle fits, 0 where it spans the side)."""
    low, high = ERASE_AREA
    area = (low + (high - low) * uniform[1]) * height * width
    aspect = ERASE_MIN_ASPECT + (1.0 / ERASE_MIN_ASPECT - ERASE_MIN_ASPECT) * uniform[2]
    erase_h = jnp.minimum(jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32), height)
    erase_w = jnp.minimum(jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32), width)
    return {
        "erase": uniform[0] <= ERASE_PROBABILITY,
        "top": _uniform_start(uniform[3], height - erase_h),
        "left": _uniform_start(uniform[4], width - erase_w),
        "erase_h": erase_h,
        "erase_w": erase_w,
    }


def _uniform_start(uniform, room):
    room = jnp.maximum(room, 1)
    start = jnp.floor(uniform * room.astype(jnp.float32)).astype(jnp.int32)
    return jnp.minimum(start, room - 1)


def transform_rows(table, rows, params: dict, pad_size: int) -> jax.Array:
    """Rows `rows` of the uint8 `table` (N, H, W, 3), flipped, zero-padded, cropped and (where
    `params` has erasing) erased: (n, H, W, 3) uint8.

    The gather from the table, the flip and the pad + crop are one gather: output pixel (i, j)
    of an image reads source pixel (oy + i - pad, ox + j - pad) of its row, its column
    mirrored (W - 1 - column) when flipped, and is 0 outside the image. That is the host's
    pad-then-crop of the flipped image, since the padding is symmetric.
    """
    height, width = table.shape[1:3]
    source_rows = params["offset"][:, :1] + jnp.arange(height) - pad_size
    source_cols = params["offset"][:, 1:] + jnp.arange(width) - pad_size
    source_cols = jnp.where(params["flip"][:, None], width - 1 - source_cols, source_cols)
    inside_rows = (source_rows >= 0) & (source_rows < height)
    inside_cols = (source_cols >= 0) & (source_cols < width)
    pixels = table[
        rows[:, None, None],
        jnp.clip(source_rows, 0, height - 1)[:, :, None],
        jnp.clip(source_cols, 0, width - 1)[:, None, :],
    ]
    inside = inside_rows[:, :, None] & inside_cols[:, None, :]
    images = jnp.where(inside[..., None], pixels, jnp.zeros((), table.dtype))
    if "erase" not in params:
        return images
    rows_in = _in_span(height, params["top"], params["erase_h"])
    cols_in = _in_span(width, params["left"], params["erase_w"])
    erased = params["erase"][:, None, None] & rows_in[:, :, None] & cols_in[:, None, :]
    return jnp.where(erased[..., None], params["noise"], images)


def _in_span(size: int, start, length):
    positions = jnp.arange(size)[None, :]
    return (positions >= start[:, None]) & (positions < (start + length)[:, None])


def transform(images, params: dict, pad_size: int) -> jax.Array:
    """`transform_rows` of every image of a (n, H, W, 3) uint8 batch, in order."""
    return transform_rows(images, jnp.arange(images.shape[0]), params, pad_size)


def augment_batch(table, index, neighbor_index, *, seed: int, step, pad_size: int):
    """The augmented central and neighbour images of a training batch, gathered from `table`.

    Args:
      table: (N, H, W, 3) uint8, the decoded training images.
      index: (b,) the central rows; neighbor_index: (b, K) their neighbours' rows.
      seed, step: the run's seed and the global step, which fix every draw.
      pad_size: zero padding of the flip/pad/crop transform.

    Returns:
      `image` (b, H, W, 3) uint8, flipped, cropped and randomly erased, and `neighbor_image`
      (b, K, H, W, 3) uint8, flipped and cropped with their own draws, never erased.
    """
    height, width = table.shape[1:3]
    batch_size, num_neighbors = neighbor_index.shape
    central_key, neighbor_key = step_keys(seed, step)
    central = draw_params(image_keys(central_key, index), height, width, pad_size, True)
    keys = image_keys(neighbor_key, index, num_neighbors).reshape(-1)
    neighbor = draw_params(keys, height, width, pad_size, False)
    image = transform_rows(table, index, central, pad_size)
    neighbor_image = transform_rows(table, neighbor_index.reshape(-1), neighbor, pad_size)
    return image, neighbor_image.reshape(batch_size, num_neighbors, height, width, 3)
