"""What a training transform did to an image: which flip and crop, which erased rectangle
(shared by the host and device augmentation tests; no TensorFlow)."""

import numpy as np


def _flip_crop_candidates(image, pad):
    """Every result of flip + zero-pad + crop of `image`, keyed by (flip, top, left)."""
    height, width = image.shape[:2]
    for flip in (False, True):
        source = image[:, ::-1] if flip else image
        padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)))
        for top in range(2 * pad + 1):
            for left in range(2 * pad + 1):
                yield (flip, top, left), padded[top : top + height, left : left + width]


def exact_transform(out, image, pad):
    """The (flip, top, left) that produce `out` from `image` exactly, or None."""
    for params, candidate in _flip_crop_candidates(image, pad):
        if np.array_equal(out, candidate):
            return params
    return None


def erased_box(out, image, pad):
    """Bounding box (top, left, h, w) of the pixels that differ from the best flip/crop.

    Returns None when `out` is an exact flip/crop of `image`.
    """
    differs = min(
        (np.any(out != candidate, axis=-1) for _, candidate in _flip_crop_candidates(image, pad)),
        key=np.sum,
    )
    if not differs.any():
        return None
    rows, cols = np.flatnonzero(differs.any(1)), np.flatnonzero(differs.any(0))
    box = (rows[0], cols[0], rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
    inside = differs[box[0] : box[0] + box[2], box[1] : box[1] + box[3]]
    assert differs.sum() == inside.sum(), "changed pixels outside one rectangle"
    assert inside.mean() > 0.9, "the rectangle is not filled with noise"
    return box
