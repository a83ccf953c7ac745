"""Five-point alignment: a face whose landmarks are known comes out with them on the template."""

import numpy as np
import pytest

from ldl_jax import face_align
from tests.helpers.image_checks import distances_to_nearest_blob, draw_dots


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


@pytest.mark.parametrize(
    "angle, scale, size", [(0.0, 3.0, 112), (-28.0, 2.2, 100), (15.0, 4.5, 224)]
)
def test_aligning_a_photo_puts_its_landmarks_on_the_template(angle, scale, size):
    """Five bright dots drawn at known positions of a rotated, scaled 'photo' land within a
    pixel of the template of the output size after alignment."""
    photo_from_template = _rotation_scale(angle, scale, (180.0, 150.0))
    landmarks = face_align.TEMPLATE_112 @ photo_from_template[:, :2].T + photo_from_template[:, 2]
    photo = draw_dots((800, 800), landmarks)
    aligned = face_align.align_face(np.dstack([photo] * 3), landmarks, size)
    assert aligned.shape == (size, size, 3)
    distances = distances_to_nearest_blob(aligned[..., 0], face_align.template(size))
    np.testing.assert_array_less(distances, 1.0)


def test_crop_box_centres_the_box_with_its_margin():
    image = np.zeros((300, 400, 3), np.uint8)
    image[100:160, 200:260] = 255  # a 60-pixel box at (200, 100)
    crop = face_align.crop_box(image, (200, 100, 60, 60), size=84, margin=0.2)
    # The box spans 60 of the 84-pixel side (60 * 1.4 = 84): columns/rows 12..71 are white.
    white = np.argwhere(crop[..., 0] > 127)
    assert white.min(0).tolist() == [12, 12] and white.max(0).tolist() == [71, 71]
