"""ldl_jax.data.streams: the augmented training batches, their epochs, resumption and
per-process slices."""

import numpy as np
import pytest

from tests.helpers.image_checks import erased_box, exact_transform
from tests.helpers.rows import (
    NUM_NEIGHBORS,
    NUM_ROWS,
    PAD,
    SIZE,
    assert_batches_equal,
    random_images,
    take,
    train_stream,
    train_table,
)


def test_train_batches_fields_shapes_and_consistency():
    table, images = train_table(), random_images()
    batches = take(train_stream(table, images), 6)
    batch = batches[0]
    assert {key: (value.shape, value.dtype) for key, value in batch.items()} == {
        "image": ((4, SIZE, SIZE, 3), np.uint8),
        "neighbor_image": ((4, NUM_NEIGHBORS, SIZE, SIZE, 3), np.uint8),
        "label": ((4,), np.int32),
        "va_weight": ((4, NUM_NEIGHBORS), np.float32),
        "index": ((4,), np.int32),
        "neighbor_index": ((4, NUM_NEIGHBORS), np.int32),
        "neighbor_label": ((4, NUM_NEIGHBORS), np.int32),
    }
    num_erased = 0
    for batch in batches:
        index = batch["index"]
        np.testing.assert_array_equal(batch["label"], table.labels[index])
        np.testing.assert_array_equal(batch["neighbor_index"], table.knn[index])
        np.testing.assert_array_equal(batch["neighbor_label"], table.labels[table.knn[index]])
        np.testing.assert_array_equal(batch["va_weight"], table.va_weights[index])
        for row, neighbors in zip(index, batch["neighbor_index"], strict=True):
            for k, neighbor in enumerate(neighbors):
                out = batch["neighbor_image"][list(index).index(row), k]
                assert exact_transform(out, images[neighbor], PAD) is not None
        for out, row in zip(batch["image"], index, strict=True):
            num_erased += erased_box(out, images[row], PAD) is not None
    assert 0 < num_erased < 6 * 4


def test_train_batches_without_neighbour_images_keep_every_other_field():
    """The memory bank's stream: no `neighbor_image`, and the same central augmentation."""
    table, images = train_table(), random_images()
    with_neighbors = take(train_stream(table, images, start_step=2), 2)
    without = take(train_stream(table, images, start_step=2, neighbor_images=False), 2)
    for full, lean in zip(with_neighbors, without, strict=True):
        assert set(full) - set(lean) == {"neighbor_image"}
        assert_batches_equal([lean], [{key: full[key] for key in lean}])


def test_train_batches_visit_every_row_once_per_epoch():
    table, images = train_table(), random_images()
    batches = take(train_stream(table, images), 6)  # 3 steps per epoch
    epochs = [np.concatenate([b["index"] for b in batches[i : i + 3]]) for i in (0, 3)]
    for order in epochs:
        assert sorted(order) == list(range(NUM_ROWS))
    assert not np.array_equal(epochs[0], epochs[1])


def test_train_batches_drop_the_partial_batch():
    batches = take(train_stream(train_table(11), random_images(11)), 2)  # 2 steps per epoch
    order = np.concatenate([b["index"] for b in batches])
    assert len(set(order)) == 8 and order.max() < 11


def test_train_batches_resume_gives_the_same_batches():
    table, images = train_table(), random_images()
    uninterrupted = take(train_stream(table, images), 7)
    resumed = take(train_stream(table, images, start_step=4), 3)  # mid epoch 1
    assert_batches_equal(resumed, uninterrupted[4:])


def test_process_slices_concatenate_to_the_global_batch():
    table, images = train_table(), random_images()
    global_batches = take(train_stream(table, images, start_step=2), 3)
    slices = [
        take(train_stream(table, images, start_step=2, process_index=p, process_count=2), 3)
        for p in range(2)
    ]
    joined = [
        {key: np.concatenate([first[key], second[key]]) for key in first}
        for first, second in zip(*slices, strict=True)
    ]
    assert slices[0][0]["image"].shape[0] == 2
    assert_batches_equal(joined, global_batches)


def test_train_batches_rejects_indivisible_process_count():
    with pytest.raises(ValueError, match="divisible by process_count 3"):
        train_stream(train_table(), random_images(), process_count=3)
