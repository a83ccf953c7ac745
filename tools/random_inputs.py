"""Random inputs in the training formats, no files needed: the benchmark's `--data=device`
batches, tables and memory banks, which the step tests reuse."""

import numpy as np

from ldl_jax import backbones, memory_bank
from ldl_jax.data import tables


def random_table(config, num_rows: int) -> tables.TrainTable:
    """A training table of random labels, neighbours and VA weights (no files)."""
    rng = np.random.default_rng(0)
    return tables.TrainTable(
        paths=np.array([f"{row}.png" for row in range(num_rows)]),
        labels=(np.arange(num_rows) % config.num_classes).astype(np.int32),
        va=rng.uniform(-1, 1, (num_rows, 2)).astype(np.float32),
        knn=rng.integers(0, num_rows, (num_rows, config.num_neighbors)).astype(np.int32),
        va_weights=rng.uniform(0.2, 1.0, (num_rows, config.num_neighbors)).astype(np.float32),
    )


def random_train_batch(config, num_rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch in the train step's format with random content (benchmarks and tests)."""
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


def random_train_images(config, num_rows: int, seed: int = 0) -> np.ndarray:
    """(num_rows, S, S, 3) random uint8 training images (for device-resident input)."""
    size = config.input_size
    return np.random.default_rng(seed).integers(0, 256, (num_rows, size, size, 3), np.uint8)


def random_bank(config, num_rows: int, seed: int = 0):
    """A neighbour memory bank with random entries: softmax-like rows and normal features."""
    rng = np.random.default_rng(seed)
    feature_dim = backbones.BACKBONE_FEATURE_DIMS[config.model.backbone]
    return memory_bank.MemoryBank(
        probs=rng.dirichlet(np.ones(config.num_classes), num_rows).astype(np.float32),
        features=rng.normal(size=(num_rows, feature_dim)).astype(np.float32),
    )
