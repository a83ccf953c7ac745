"""The training transform of already-decoded uint8 images, in stateless TensorFlow ops.

Randomness is drawn for a whole global batch from a seed and sliced, so the slices that
different processes augment concatenate to the single-process batch (docs/METHOD.md §1).
Written as per-image parameters (`draw_params`) applied by `transform`, like its JAX twin
`ldl_jax.data.device_augment` for device-resident images: the same parameters give the same
pixels in both.
"""

from __future__ import annotations

import tensorflow as tf

from ldl_jax.data.device_augment import ERASE_AREA, ERASE_MIN_ASPECT, ERASE_PROBABILITY


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
    return augment_slice(
        images, seed, 0, tf.shape(images)[0], pad_size=pad_size, random_erasing=random_erasing
    )


def augment_slice(images, seed, start, total, *, pad_size: int, random_erasing: bool):
    """Augments `images` as rows [start, start + n) of a batch of `total` images.

    Randomness is drawn for the whole batch of `total` and sliced, so the slices that
    different processes augment concatenate to the single-process batch.
    """
    stop = start + tf.shape(images)[0]
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    params = draw_params(seed, total, height, width, pad_size, random_erasing)
    params = {name: value[start:stop] for name, value in params.items()}
    return transform(images, params, pad_size)


def transform(images, params: dict, pad_size: int) -> tf.Tensor:
    """Flips, zero-pads and crops each image, and erases where `params` has erasing.

    `params` as `draw_params` returns them, one entry per image of `images`.
    """
    images = _flip_pad_crop(images, params["flip"], params["offset"], pad_size)
    if "erase" in params:
        images = _erase(images, params)
    return images


def draw_params(seed, total, height, width, pad_size: int, random_erasing: bool) -> dict:
    """Per-image random parameters of the transform for a batch of `total` images.

    `flip` (n,) bool, `offset` (n, 2) int32 (crop rows, columns in the padded image) and with
    `random_erasing`: `erase` (n,) bool, `top`, `left`, `erase_h`, `erase_w` (n,) int32 and
    `noise` (n, H, W, 3) uint8.
    """
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


def step_seeds(seed: int, step):
    """(central, neighbour) seeds of global training step `step`: two streams split from
    (seed, step), so every step's augmentation is fixed by the seed and the step alone."""
    step_seed = tf.stack([tf.constant(seed, tf.int64), step])
    return tf.unstack(tf.random.experimental.stateless_split(step_seed, num=2))
