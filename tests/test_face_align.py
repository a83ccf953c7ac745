"""Five-point alignment: a face whose landmarks are known comes out with them on the template."""

import cv2
import numpy as np
import pytest

from ldl_jax import face_align


def _rotation_scale(angle_degrees, scale, shift):
    angle = np.deg2rad(angle_degrees)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return np.hstack([scale * rotation, np.asarray(shift, float)[:, None]])


def test_similarity_transform_recovers_a_known_transform():
    matrix = _rotation_scale(23.0, 1.7, (40.0, -12.0))
    source = face_align.TEMPLATE_112
    target = source @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(face_align.similarity_transform(source, target), matrix, atol=1e-9)


def test_similarity_transform_refuses_mismatched_points():
    with pytest.raises(ValueError, match=r"\(5, 2\) and \(4, 2\)"):
        face_align.similarity_transform(np.zeros((5, 2)), np.zeros((4, 2)))


def _blob_centres(image: np.ndarray) -> np.ndarray:
    """Intensity-weighted centres of the bright blobs of a grey image, sorted by label."""
    count, labels = cv2.connectedComponents((image > 40).astype(np.uint8))
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    weights = image.astype(np.float64)
    centres = []
    for label in range(1, count):
        mask = (labels == label) * weights
        centres.append([(mask * xs).sum() / mask.sum(), (mask * ys).sum() / mask.sum()])
    return np.array(centres)


@pytest.mark.parametrize("angle, scale, size", [(0.0, 3.0, 112), (-28.0, 2.2, 100), (15.0, 4.5, 224)])
def test_aligning_a_photo_puts_its_landmarks_on_the_template(angle, scale, size):
    """Five bright dots drawn at known positions of a rotated, scaled 'photo' land within a
    pixel of the template of the output size after alignment."""
    photo_from_template = _rotation_scale(angle, scale, (180.0, 150.0))
    landmarks = face_align.TEMPLATE_112 @ photo_from_template[:, :2].T + photo_from_template[:, 2]
    photo = np.zeros((800, 800), np.uint8)
    for x, y in landmarks:
        cv2.circle(photo, (round(x * 16), round(y * 16)), 5 * 16, 255, -1, cv2.LINE_AA, shift=4)
    aligned = face_align.align_face(np.dstack([photo] * 3), landmarks, size)
    assert aligned.shape == (size, size, 3)
    found = _blob_centres(aligned[..., 0])
    expected = face_align.template(size)
    order = [int(np.argmin(((found - point) ** 2).sum(1))) for point in expected]
    assert sorted(order) == list(range(5))
    np.testing.assert_array_less(np.linalg.norm(found[order] - expected, axis=1), 1.0)


def test_crop_box_centres_the_box_with_its_margin():
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:160, 200:260] = 255  # a 60-pixel box at (200, 100)
    crop = face_align.crop_box(image, (200, 100, 60, 60), size=84, margin=0.2)
    # The box spans 60 of the 84-pixel side (60 * 1.4 = 84): columns/rows 12..71 are white.
    white = np.argwhere(crop[..., 0] > 127)
    assert white.min(0).tolist() == [12, 12] and white.max(0).tolist() == [71, 71]
