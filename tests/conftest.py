"""Shared fixtures: a tiny config and random batches in the train step's format."""

import tempfile

import jax
import numpy as np
import pytest

from configs import default

# Tests build the same small programs many times (each training run compiles its own step):
# a persistent compilation cache turns the repeats into cache hits.
jax.config.update('jax_compilation_cache_dir', tempfile.mkdtemp(prefix='ldl_jax_xla_cache_'))
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def make_tiny_config(**overrides):
    """The default config shrunk to a model and images that run in seconds on a CPU."""
    config = default.get_config()
    config.model.backbone = "resnet_tiny"
    config.input_size = 16
    config.pad_size = 2
    config.batch_size = 4
    config.num_neighbors = 3
    config.lr = 1e-3
    config.update(overrides)
    return config


def make_random_batch(config, num_rows, seed=0):
    """A batch with the fields and dtypes that the input pipeline yields."""
    rng = np.random.default_rng(seed)
    b, k, s = config.batch_size, config.num_neighbors, config.input_size
    return {
        "image": rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8),
        "neighbor_image": rng.integers(0, 256, (b, k, s, s, 3), dtype=np.uint8),
        "label": rng.integers(0, config.num_classes, b).astype(np.int32),
        "va_weight": rng.uniform(0.2, 1.0, (b, k)).astype(np.float32),
        "index": rng.choice(num_rows, b, replace=False).astype(np.int32),
        "neighbor_index": rng.integers(0, num_rows, (b, k)).astype(np.int32),
        "neighbor_label": rng.integers(0, config.num_classes, (b, k)).astype(np.int32),
    }


@pytest.fixture
def tiny_config():
    return make_tiny_config()
