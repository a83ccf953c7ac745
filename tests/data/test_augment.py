"""ldl_jax.data.augment: the host's training transform (flip, pad and crop, random erasing)."""

import numpy as np
import pytest
import tensorflow as tf

from ldl_jax.data import augment as augment_lib
from tests.helpers.image_checks import erased_box, exact_transform
from tests.helpers.rows import PAD, random_images


def _augment(images, seed, *, pad_size=PAD, random_erasing=True):
    seed = tf.constant(seed, tf.int64)
    return augment_lib.augment(
        images, seed, pad_size=pad_size, random_erasing=random_erasing
    ).numpy()


@pytest.mark.parametrize("random_erasing", [True, False])
def test_augment_is_the_same_eagerly_and_inside_tf_data(random_erasing):
    images = random_images(8)
    seed = tf.constant([5, 6], tf.int64)
    eager = _augment(images, [5, 6], random_erasing=random_erasing)
    dataset = tf.data.Dataset.from_tensors(images).map(
        lambda batch: augment_lib.augment(batch, seed, pad_size=PAD, random_erasing=random_erasing)
    )
    np.testing.assert_array_equal(next(dataset.as_numpy_iterator()), eager)
    assert eager.dtype == np.uint8 and eager.shape == images.shape


def test_augment_is_deterministic_per_seed():
    images = random_images(8)
    np.testing.assert_array_equal(_augment(images, [1, 2]), _augment(images, [1, 2]))
    assert not np.array_equal(_augment(images, [1, 2]), _augment(images, [1, 3]))


def test_augment_without_padding_or_erasing_only_flips():
    images = random_images(32)
    out = _augment(images, [0, 1], pad_size=0, random_erasing=False)
    flips = [exact_transform(out[i], images[i], 0) for i in range(len(images))]
    assert None not in flips
    assert {params[0] for params in flips} == {False, True}


def test_augment_flip_and_crop_shift_content():
    images = random_images(64)
    out = _augment(images, [0, 2], random_erasing=False)
    params = [exact_transform(out[i], images[i], PAD) for i in range(len(images))]
    assert None not in params
    assert {flip for flip, _, _ in params} == {False, True}
    assert {top for _, top, _ in params} == set(range(2 * PAD + 1))
    assert {left for _, _, left in params} == set(range(2 * PAD + 1))


def test_random_erasing_changes_one_rectangle_of_plausible_area():
    images = random_images(200, size=32)
    out = _augment(images, [9, 9])
    boxes = [erased_box(out[i], images[i], PAD) for i in range(len(images))]
    erased = [box for box in boxes if box is not None]
    assert 0.35 < len(erased) / len(images) < 0.65
    for _, _, height, width in erased:
        assert 0.015 <= height * width / 32**2 <= 0.33
        assert 0.25 <= height / width <= 4.0
    # the same seed without erasing gives the same flips and crops
    plain = _augment(images, [9, 9], random_erasing=False)
    unchanged = [i for i, box in enumerate(boxes) if box is None]
    np.testing.assert_array_equal(out[unchanged], plain[unchanged])
