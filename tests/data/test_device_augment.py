"""ldl_jax.data.device_augment: the training transform on the devices, against the host's
(`ldl_jax.data.augment`) for the same parameters and in distribution, and the in-step gather +
augmentation of device-resident images (no TensorFlow in the latter)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from ldl_jax.data import augment as augment_lib
from ldl_jax.data import device_augment
from tests.helpers.image_checks import erased_box, exact_transform

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


# ------------------------------------------------------------- the device transform vs the host's

# Non-square, so that a swapped axis shows.
HEIGHT, WIDTH = 12, 20
# Draws per distribution, and the tolerance: means agree within this many standard errors of
# their difference (a false alarm at 5 is a one-in-a-million event per statistic).
NUM_DRAWS = 20_000
TOLERANCE_SE = 5.0
NUM_NOISE_IMAGES = 2_000  # of 720 noise values each


@pytest.mark.parametrize("random_erasing", [True, False])
def test_device_transform_gives_the_host_pixels_for_the_same_params(random_erasing):
    images = np.random.default_rng(0).integers(0, 256, (64, HEIGHT, WIDTH, 3), np.uint8)
    params = augment_lib.draw_params(
        tf.constant([4, 2], tf.int64), 64, HEIGHT, WIDTH, PAD, random_erasing
    )
    host = augment_lib.transform(tf.constant(images), params, PAD).numpy()
    device = jax.jit(device_augment.transform, static_argnums=2)(
        images, {name: jnp.asarray(value.numpy()) for name, value in params.items()}, PAD
    )
    np.testing.assert_array_equal(np.asarray(device), host)
    assert 0 < params["flip"].numpy().sum() < 64  # both branches ran
    if random_erasing:
        assert 0 < params["erase"].numpy().sum() < 64


def _draw_statistics(params) -> dict[str, np.ndarray]:
    """Samples whose means characterise the draws: rates, offset histogram, erased boxes, noise."""
    erased = params["erase"]
    height, width = params["erase_h"][erased], params["erase_w"][erased]
    offsets = {
        f"offset[{axis}]=={value}": params["offset"][:, axis] == value
        for axis in (0, 1)
        for value in range(2 * PAD + 1)
    }
    noise = params["noise"][:NUM_NOISE_IMAGES].reshape(-1)
    return {
        "flip": params["flip"],
        **offsets,
        "erase": erased,
        "erase_area": height * width / (HEIGHT * WIDTH),
        "erase_aspect": height / width,
        "erase_top": params["top"][erased],
        "erase_left": params["left"][erased],
        "noise": noise,
        **{
            f"noise in [{low}, {low + 63}]": (noise >= low) & (noise <= low + 63)
            for low in (0, 64, 128, 192)
        },
    }


def test_device_draws_follow_the_host_distributions():
    host = augment_lib.draw_params(
        tf.constant([0, 1], tf.int64), NUM_DRAWS, HEIGHT, WIDTH, PAD, True
    )

    @jax.jit
    def draw_on_device():
        keys = device_augment.image_keys(device_augment.step_keys(0, 1)[0], jnp.arange(NUM_DRAWS))
        return device_augment.draw_params(keys, HEIGHT, WIDTH, PAD, True)

    device = draw_on_device()
    host = _draw_statistics({name: value.numpy() for name, value in host.items()})
    device = _draw_statistics(jax.device_get(device))
    for name, samples in host.items():
        other = device[name].astype(np.float64)
        samples = samples.astype(np.float64)
        difference = abs(samples.mean() - other.mean())
        standard_error = np.sqrt(samples.var() / samples.size + other.var() / other.size)
        assert difference <= TOLERANCE_SE * standard_error, (
            f"{name}: host mean {samples.mean():.4f}, device mean {other.mean():.4f}"
        )
