"""The neighbour memory bank: `config.neighbors = 'memory_bank'` (docs/METHOD.md §3, beyond the
reference; off by default).

The faithful step runs the backbone on the K neighbour images of every central sample, about
K/3 of its cost (a forward pass per neighbour against forward + backward on the central image).
With the bank, the train state keeps, for every training row, the softmax output and the
feature of its last central pass (stop-gradient), and the step reads its neighbours' entries by
row index instead: no neighbour images at all, about (3 + K) / 3 times fewer FLOPs. After its
central pass the step writes the central rows' entries. A row's entry is therefore up to one
epoch old, and it comes from an augmented, randomly erased image in training mode.

A fresh run starts from one eval-mode pass (BatchNorm running averages, no augmentation) over
the training set (`fill`); the bank is part of the checkpointed state, so a resumed run reads
what the interrupted one would have read.
"""

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ldl_jax import inference, models


@flax.struct.dataclass
class MemoryBank:
    """Per training row, its last central pass: `probs` (N, C) softmax outputs and `features`
    (N, D), float32."""

    probs: jax.Array
    features: jax.Array


def empty(num_rows: int, num_classes: int, feature_dim: int) -> MemoryBank:
    """A zero bank of the right shapes (what a checkpoint restores into, before `fill`)."""
    return MemoryBank(
        probs=jnp.zeros((num_rows, num_classes), jnp.float32),
        features=jnp.zeros((num_rows, feature_dim), jnp.float32),
    )


def read(bank: MemoryBank, neighbor_index):
    """The neighbours' (features (B, K, D), probs (B, K, C)) from the bank."""
    return bank.features[neighbor_index], bank.probs[neighbor_index]


def write(bank: MemoryBank, index, features, probs, axis_name: str | None = None) -> MemoryBank:
    """The bank with rows `index` (B,) replaced by `features` (B, D) and `probs` (B, C).

    Under pmap (`axis_name`) each device holds a copy of the whole bank and only its own
    central rows: every device's rows are gathered and written to every copy.
    """
    features = jax.lax.stop_gradient(features).astype(bank.features.dtype)
    probs = jax.lax.stop_gradient(probs).astype(bank.probs.dtype)
    if axis_name is not None:
        index, features, probs = (
            jax.lax.all_gather(x, axis_name, tiled=True) for x in (index, features, probs)
        )
    return MemoryBank(
        probs=bank.probs.at[index].set(probs), features=bank.features.at[index].set(features)
    )


def initial_entries(model: models.LDLVA, variables, images, batch_size: int) -> MemoryBank:
    """Eval-mode (no augmentation, BatchNorm running averages) features and softmax outputs
    of every training image (N, S, S, 3) uint8, through one compiled function on one device.

    The logits are those the step writes later, without the prior correction (a shift that
    only evaluation applies). Every process computes the whole bank (each holds all training
    images), so no collective is needed and every copy is the same.
    """
    uncorrected = model.clone(prior_correction=False)
    classifier_stats = dict(variables["batch_stats"]["classifier"])
    classifier_stats.pop("prior_correction", None)
    variables = {
        "params": variables["params"],
        "batch_stats": {**variables["batch_stats"], "classifier": classifier_stats},
    }

    def predict(variables, images):
        features, logits = uncorrected.apply(variables, images, method=models.LDLVA.classify)
        return {"features": features, "probs": jax.nn.softmax(logits)}

    entries = inference.predict_in_batches(jax.jit(predict), variables, images, batch_size)
    return MemoryBank(probs=entries["probs"], features=entries["features"])


def fill(state, model: models.LDLVA, images: np.ndarray, batch_size: int):
    """`state` (a fresh run's, before it is placed on the devices) with every row of its bank
    set by `initial_entries`."""
    logging.info("Filling the neighbour memory bank: one pass over %d images", len(images))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return state.replace(bank=initial_entries(model, variables, images, batch_size))
