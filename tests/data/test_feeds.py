"""Device-resident training input: the in-step gather + augmentation and the placement choice
(no TensorFlow; its agreement with the host transform is in tests/data/test_tables.py)."""

import jax
import numpy as np
import pytest

from ldl_jax.data import device_augment, feeds
from tests.helpers.image_checks import erased_box, exact_transform
from tests.helpers.tiny import make_tiny_config

NUM_ROWS, SIZE, PAD, NUM_NEIGHBORS = 12, 16, 2, 2


@jax.jit
def _augment(table, index, neighbor_index, seed, step):
    return device_augment.augment_batch(
        table, index, neighbor_index, seed=seed, step=step, pad_size=PAD
    )


def _rows(seed=0):
    """A table, every row once as a central row, and two other rows as its neighbours."""
    rng = np.random.default_rng(seed)
    table = rng.integers(0, 256, (NUM_ROWS, SIZE, SIZE, 3), np.uint8)
    index = rng.permutation(NUM_ROWS).astype(np.int32)
    neighbor_index = (index[:, None] + np.arange(1, NUM_NEIGHBORS + 1)) % NUM_ROWS
    return table, index, neighbor_index.astype(np.int32)


def test_the_step_gathers_and_augments_the_batch_rows():
    table, index, neighbor_index = _rows()
    erased, flips, offsets = 0, set(), set()
    for step in range(20):
        image, neighbor_image = jax.device_get(_augment(table, index, neighbor_index, 0, step))
        assert image.dtype == neighbor_image.dtype == np.uint8
        assert neighbor_image.shape == (NUM_ROWS, NUM_NEIGHBORS, SIZE, SIZE, 3)
        for out, row in zip(image, index, strict=True):
            erased += erased_box(out, table[row], PAD) is not None
        for outs, rows in zip(neighbor_image, neighbor_index, strict=True):
            for out, row in zip(outs, rows, strict=True):
                params = exact_transform(out, table[row], PAD)  # never erased
                assert params is not None
                flips.add(params[0])
                offsets.add(params[1:])
    assert 0.35 < erased / (20 * NUM_ROWS) < 0.65
    assert flips == {False, True}
    assert len(offsets) == (2 * PAD + 1) ** 2


def test_draws_depend_on_seed_step_and_rows_only():
    table, index, neighbor_index = _rows()
    whole = jax.device_get(_augment(table, index, neighbor_index, 0, 5))
    # What two devices or processes compute from their halves of the batch.
    halves = [
        jax.device_get(_augment(table, index[part], neighbor_index[part], 0, 5))
        for part in (slice(0, 6), slice(6, None))
    ]
    for joined, expected in zip(zip(*halves, strict=True), whole, strict=True):
        np.testing.assert_array_equal(np.concatenate(joined), expected)
    for seed, step in ((0, 6), (1, 5)):
        other = jax.device_get(_augment(table, index, neighbor_index, seed, step))
        assert not np.array_equal(other[0], whole[0])
        assert not np.array_equal(other[1], whole[1])


def _placement_config(placement):
    config = make_tiny_config()
    config.data.placement = placement
    return config


@pytest.mark.parametrize(
    "placement, limit, image_bytes, expected",
    [
        ("auto", 1000, 500, "device"),  # half the device memory: fits
        ("auto", 1000, 501, "host"),
        ("auto", None, 1, "host"),  # CPU devices report no limit
        ("device", None, 10**12, "device"),
        ("host", 10**12, 1, "host"),
    ],
)
def test_placement_choice(monkeypatch, placement, limit, image_bytes, expected):
    monkeypatch.setattr(feeds, "device_memory_limit", lambda: limit)
    assert feeds.choose_placement(_placement_config(placement), image_bytes) == expected


def test_device_placement_that_cannot_fit_is_named(monkeypatch):
    monkeypatch.setattr(feeds, "device_memory_limit", lambda: 2 << 30)
    with pytest.raises(ValueError, match=r"placement='device'.*3\.0 GiB, more than the 2\.0"):
        feeds.choose_placement(_placement_config("device"), 3 << 30)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU rule")
def test_cpu_devices_report_no_memory_limit():
    assert feeds.device_memory_limit() is None
