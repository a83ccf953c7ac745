"""ldl_jax.data.batches: batch bookkeeping without TensorFlow (index batches, padded
evaluation batches, class weights, steps per epoch)."""

import numpy as np
import pytest

from ldl_jax.data import batches as batch_lib
from tests.helpers.rows import (
    NUM_CLASSES,
    SIZE,
    assert_batches_equal,
    random_images,
    take,
    train_stream,
    train_table,
)


def test_index_batches_are_the_train_batches_without_images():
    table, images = train_table(), random_images()
    kwargs = {"start_step": 2, "process_index": 1, "process_count": 2}
    with_images = take(train_stream(table, images, **kwargs), 4)
    for batch in with_images:
        del batch["image"], batch["neighbor_image"]
    indices = batch_lib.index_batches(table, batch_size=4, seed=3, **kwargs)
    assert_batches_equal(take(indices, 4), with_images)


def test_eval_batches_count_every_image_once():
    images, labels = random_images(10), np.arange(10) % NUM_CLASSES
    batches = list(batch_lib.eval_batches(images, labels, batch_size=4))
    assert [b["mask"].tolist() for b in batches][-1] == [True, True, False, False]
    assert [int(b["mask"].sum()) for b in batches] == [4, 4, 2]
    for batch in batches:
        assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
        assert batch["label"].dtype == np.int32 and batch["mask"].dtype == bool
    mask = np.concatenate([b["mask"] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches])[mask], images)
    np.testing.assert_array_equal(np.concatenate([b["label"] for b in batches])[mask], labels)
    assert not batches[-1]["image"][2:].any()


def test_class_balanced_weights():
    weights = batch_lib.class_balanced_weights(np.array([0, 0, 0, 1, 2, 2]), 3)
    np.testing.assert_allclose(weights, [6 / (3 * 3), 6 / (3 * 1), 6 / (3 * 2)], rtol=1e-6)
    assert weights.dtype == np.float32
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] have no training sample"):
        batch_lib.class_balanced_weights(np.array([0, 2, 2]), 3)


def test_steps_per_epoch_drops_the_partial_batch():
    assert batch_lib.steps_per_epoch(12, 4) == 3
    assert batch_lib.steps_per_epoch(11, 4) == 2
