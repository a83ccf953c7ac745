"""The classifier head and AdaptiveSimNet on a backbone (docs/METHOD.md §2), in flax.linen.

`LDLVA` bundles a classifier (backbone + softmax head) with the AdaptiveSimNet that weights
neighbours; `create_model(config)` builds it from a config. The feature size D always comes from
the backbone (`backbones.BACKBONE_FEATURE_DIMS`), never from the config.

Images enter the model as uint8: `normalize_images` is the one preprocessing, used by the train
steps and by `LDLVA.classify`, the uint8-in entry of evaluation, inference, export and
inspection. `abstract_variables` gives the variables' shapes without computing them (what a
checkpoint restores into).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ldl_jax import backbones, config_fields, ldl

ModuleDef = Any

# AdaptiveSimNet is a Keras model in the reference: Keras BatchNormalization defaults.
SIMNET_BN_MOMENTUM = 0.99
SIMNET_BN_EPSILON = 1e-3
SIMNET_LOGIT_FLOOR = -1.3

# Keras HeNormal: truncated normal with stddev sqrt(2 / fan_in).
he_normal_truncated = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")
# Keras Dense's default kernel initialiser.
glorot_uniform = nn.initializers.glorot_uniform()


def normalize_images(images, dtype):
    """uint8 [0, 255] -> (x - 127.5) / 127.5 in [-1, 1], in the compute dtype."""
    return ((images.astype(jnp.float32) - 127.5) / 127.5).astype(dtype)


# --------------------------------------------------------------------------------------------
# Classifier and AdaptiveSimNet.


class PriorCorrection(nn.Module):
    """Eval-mode logits + `ldl.prior_shift` of the running label and target marginals.

    Label distributions move probability mass between classes: on clean labels mostly from the
    rare classes, whose VA neighbours are more often of other classes, to the frequent ones, so
    a network trained on them predicts the rare classes less often than their labels occur
    (docs/METHOD.md §3, "The prior correction"). The two (C,) marginals are running averages of
    the train batches' one-hot labels and target distributions, kept in the 'batch_stats'
    collection beside BatchNorm's so that evaluation, inference and export apply the shift; the
    train step moves them (`update_prior_marginals`). Train-mode logits pass unchanged.
    """

    num_classes: int

    @nn.compact
    def __call__(self, logits, train: bool):
        def uniform():
            return jnp.full((self.num_classes,), 1.0 / self.num_classes, jnp.float32)

        label_marginal = self.variable("batch_stats", "label_marginal", uniform)
        target_marginal = self.variable("batch_stats", "target_marginal", uniform)
        if train:
            return logits
        return logits + ldl.prior_shift(label_marginal.value, target_marginal.value)


def update_prior_marginals(batch_stats, labels, targets, axis_name=None):
    """`batch_stats` with LDLVA's prior-correction marginals moved toward this batch's (B,)
    labels and (B, C) targets (averaged over the devices of `axis_name`)."""
    marginals = batch_stats["classifier"]["prior_correction"]
    one_hot = jax.nn.one_hot(labels, targets.shape[-1], dtype=jnp.float32)
    updated = {
        "label_marginal": ldl.running_marginal(
            marginals["label_marginal"], one_hot, axis_name=axis_name
        ),
        "target_marginal": ldl.running_marginal(
            marginals["target_marginal"], targets.astype(jnp.float32), axis_name=axis_name
        ),
    }
    classifier = {**batch_stats["classifier"], "prior_correction": updated}
    return {**batch_stats, "classifier": classifier}


class Classifier(nn.Module):
    """Backbone + Dense(C) head. Returns (features (B, D), logits (B, C)), both float32.

    With `prior_correction`, eval-mode logits are shifted by `PriorCorrection`.
    """

    backbone: ModuleDef
    num_classes: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # set: BatchNorm statistics over this device axis
    prior_correction: bool = False

    @nn.compact
    def __call__(self, x, train: bool = True):
        features = self.backbone(dtype=self.dtype, bn_axis_name=self.bn_axis_name, name="backbone")(
            x, train=train
        )
        logits = nn.Dense(
            self.num_classes, kernel_init=he_normal_truncated, dtype=self.dtype, name="head"
        )(features).astype(jnp.float32)
        if self.prior_correction:
            logits = PriorCorrection(self.num_classes, name="prior_correction")(logits, train)
        return features.astype(jnp.float32), logits


class PairDense(nn.Module):
    """Dense on concat(f_i, f_ij) for every pair, without building the (B, K, 2D) concatenation.

    concat(f_i, f_ij) W = f_i W[:D] + f_ij W[D:]: the central half is computed once per sample
    instead of K times, which halves the first layer's cost when D is large.
    """

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, central, neighbors):
        dim = central.shape[-1]
        kernel = self.param("kernel", glorot_uniform, (2 * dim, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        kernel = kernel.astype(self.dtype)
        central_part = central.astype(self.dtype) @ kernel[:dim]
        return central_part[:, None, :] + neighbors.astype(self.dtype) @ kernel[dim:] + bias


class AdaptiveSimNet(nn.Module):
    """s_ij = sigmoid(max(MLP(concat(f_i, f_ij)), -1.3)) in [0.214, 1); BN over B and K.

    MLP: Dense(512), BN, ReLU, Dense(256), BN, ReLU, Dense(1), with Keras' initialisation.
    """

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # set: BatchNorm statistics over this device axis

    @nn.compact
    def __call__(self, features, neighbor_features, train: bool = True):
        batch, k, _ = neighbor_features.shape
        norm = functools.partial(
            nn.BatchNorm,
            axis_name=self.bn_axis_name,
            use_running_average=not train,
            momentum=SIMNET_BN_MOMENTUM,
            epsilon=SIMNET_BN_EPSILON,
            dtype=self.dtype,
        )
        dense = functools.partial(nn.Dense, kernel_init=glorot_uniform, dtype=self.dtype)
        x = PairDense(512, dtype=self.dtype)(features, neighbor_features).reshape(batch * k, -1)
        x = nn.relu(norm()(x))
        x = nn.relu(norm()(dense(256)(x)))
        logit = dense(1)(x).astype(jnp.float32)
        return nn.sigmoid(jnp.maximum(logit, SIMNET_LOGIT_FLOOR)).reshape(batch, k)


class LDLVA(nn.Module):
    """The trained network: `__call__` classifies, `similarity` weights neighbours."""

    backbone: ModuleDef
    num_classes: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # set: BatchNorm statistics over this device axis
    prior_correction: bool = False  # `config.prior_correction`: see `PriorCorrection`

    def setup(self):
        self.classifier = Classifier(
            self.backbone,
            self.num_classes,
            dtype=self.dtype,
            bn_axis_name=self.bn_axis_name,
            prior_correction=self.prior_correction,
        )
        self.simnet = AdaptiveSimNet(dtype=self.dtype, bn_axis_name=self.bn_axis_name)

    def __call__(self, x, train: bool = True):
        return self.classifier(x, train=train)

    def similarity(self, features, neighbor_features, train: bool = True):
        return self.simnet(features, neighbor_features, train=train)

    def classify(self, images):
        """Eval-mode (features, logits) of uint8 images (n, S, S, 3); normalisation inside."""
        return self(normalize_images(images, self.dtype), train=False)

    def initialize(self, x, num_neighbors: int):
        """Touches every submodule once (for `init`)."""
        features, logits = self(x, train=False)
        neighbor_features = jnp.broadcast_to(
            features[:, None, :], (x.shape[0], num_neighbors, features.shape[-1])
        )
        return self.similarity(features, neighbor_features, train=False), logits


def create_model(config, bn_axis_name: str | None = None) -> LDLVA:
    """Builds the model of `config.model` (backbone, dtype) for `config.num_classes`.

    `bn_axis_name` synchronises BatchNorm statistics over that device axis (pmap). The config's
    values are checked by `ldl_jax.config_checks.validate_config`; a run's saved config from
    before `prior_correction` existed builds the model it was trained with (no correction).
    """
    backbone, _ = backbones.BACKBONES[config.model.backbone]
    return LDLVA(
        backbone=backbone,
        num_classes=config.num_classes,
        dtype=jnp.dtype(config.model.dtype),
        bn_axis_name=bn_axis_name,
        prior_correction=bool(config.prior_correction),
    )


def signature(config, num_train_rows: int) -> dict[str, Any]:
    """The config values that fix the shapes of an LDLVA train state (its checkpoints' signature).

    A run with the neighbour memory bank carries `neighbors` (its state has the bank), and one
    with the prior correction carries `prior_correction` (its BatchNorm statistics hold the
    marginals); runs without either keep the signature they always had.
    """
    signature = {
        "backbone": config.model.backbone,
        "num_classes": int(config.num_classes),
        "input_size": int(config.input_size),
        "num_train_rows": int(num_train_rows),
    }
    if config.neighbors != config_fields.FORWARD:
        signature["neighbors"] = config.neighbors
    if config.prior_correction:
        signature["prior_correction"] = True
    return signature


def init_variables(model: nn.Module, rngs, input_size: int, num_neighbors: int = 1) -> dict:
    """Freshly initialised {'params', 'batch_stats'} of `model` (LDLVA or the VA regressor)."""
    dummy = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
    if isinstance(model, LDLVA):
        return model.init(rngs, dummy, num_neighbors, method=LDLVA.initialize)
    return model.init(rngs, dummy, train=False)


def abstract_variables(model: nn.Module, input_size: int) -> dict:
    """Shapes and dtypes of `model`'s variables, from its init under `jax.eval_shape`."""
    rngs = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}
    return jax.eval_shape(lambda: init_variables(model, rngs, input_size))
