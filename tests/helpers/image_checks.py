"""What was done to an image: which flip and crop, which erased rectangle (shared by the host and
device augmentation tests), and where bright dots drawn at known points ended up (the face
alignment tests); no TensorFlow."""

import cv2
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


def draw_dots(shape: tuple[int, int], points: np.ndarray, radius: float = 5.0) -> np.ndarray:
    """A black grey image of `shape` with an anti-aliased white disc at each (x, y) of `points`,
    drawn at sub-pixel positions (1/16 pixel)."""
    image = np.zeros(shape, np.uint8)
    for x, y in points:
        centre = (round(x * 16), round(y * 16))
        cv2.circle(image, centre, round(radius * 16), 255, -1, cv2.LINE_AA, shift=4)
    return image


def blob_centres(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted (x, y) centres of the bright blobs of a grey image, sorted by label."""
    count, labels = cv2.connectedComponents((image > 40).astype(np.uint8))
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    weights = image.astype(np.float64)
    centres = []
    for label in range(1, count):
        mask = (labels == label) * weights
        centres.append([(mask * xs).sum() / mask.sum(), (mask * ys).sum() / mask.sum()])
    return np.array(centres)


def distances_to_nearest_blob(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """For each of `points`, the distance to the blob centre nearest it; every blob must be the
    nearest of exactly one point (one blob per point)."""
    found = blob_centres(image)
    order = [int(np.argmin(((found - point) ** 2).sum(1))) for point in points]
    assert sorted(order) == list(range(len(points))), f"blobs {found} do not pair with {points}"
    return np.linalg.norm(found[order] - points, axis=1)
