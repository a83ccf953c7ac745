"""Five-point face alignment: a similarity transform that puts a face's landmarks on a template.

RAF-DB's aligned images were made this way (a similarity transform from five landmarks, eyes,
nose tip and mouth corners, to fixed positions); `tools/prepare_rafdb.py --images=original` and
`ldl_jax.predict`'s face detector both use `align_face`, so a detected face reaches the model
framed as the training crops are.

The template is the five-point layout widely used for 112×112 face crops (ArcFace's),
scaled to the output size. Landmarks are (x, y) pixel coordinates in the order left eye,
right eye, nose tip, left mouth corner, right mouth corner (left/right as seen in the image).
"""

from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_SIZE = 112
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],  # left eye
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # left mouth corner
        [70.7299, 92.2041],  # right mouth corner
    ],
    np.float64,
)


def template(size: int) -> np.ndarray:
    """(5, 2) target landmark positions in a `size`×`size` crop."""
    return TEMPLATE_112 * (size / TEMPLATE_SIZE)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2×3 matrix of the least-squares similarity (rotation, uniform scale, translation)
    that maps `source` points onto `target` points (Umeyama, without reflection)."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2:
        raise ValueError(f"expected two (N, 2) point sets, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(0), target.mean(0)
    source_centred, target_centred = source - source_mean, target - target_mean
    covariance = target_centred.T @ source_centred / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (source_centred**2).sum() / len(source)
    scale = (singular * sign).sum() / variance
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int) -> np.ndarray:
    """The `size`×`size` crop of `image` (H, W, C uint8) with its five `landmarks` moved onto
    `template(size)`; pixels from outside the image are black."""
    landmarks = np.asarray(landmarks, np.float64).reshape(5, 2)
    matrix = similarity_transform(landmarks, template(size))
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def crop_box(image: np.ndarray, box, size: int, margin: float = 0.2) -> np.ndarray:
    """The square `size`×`size` crop around `box` = (x, y, w, h) widened by `margin` of its
    longer side on each side, for faces without landmarks; pixels outside the image are black."""
    x, y, w, h = (float(v) for v in box)
    side = max(w, h) * (1 + 2 * margin)
    centre_x, centre_y = x + w / 2, y + h / 2
    scale = size / side
    matrix = np.array(
        [[scale, 0, size / 2 - scale * centre_x], [0, scale, size / 2 - scale * centre_y]]
    )
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_CONSTANT
    )
