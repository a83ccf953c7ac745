"""Valence/arousal regression: the model, its state, its compiled steps and its metrics.

A data set without valence and arousal (RAF-DB) gets them from a regressor trained on one that
has them (AffectNet, docs/METHOD.md §8): the backbone of the LDLVA configs with a 2-d tanh
head, trained with MSE or 1 - CCC. `ldl_jax.train` runs the loop (task 'va' of
`ldl_jax.tasks`) and `ldl_jax.annotate_va` applies the result. No TensorFlow here: this
module runs on machines that have only JAX.

The regressor is `models.Classifier` with two outputs under a `classifier` scope, as in
`models.LDLVA`, so `config.model.pretrained` loads a converted backbone the same way.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ldl_jax import backbones, config_fields, models

DIMENSIONS = ("valence", "arousal")
TRAIN_METRICS = ("loss", "rmse_valence", "rmse_arousal", "ccc_valence", "ccc_arousal")
# Keeps CCC finite when both vectors are constant (0 / 0); negligible otherwise.
CCC_EPSILON = 1e-8


class VARegressor(nn.Module):
    """Backbone + Dense(2) + tanh. Returns (features (B, D), va (B, 2) in (-1, 1)), float32."""

    backbone: Any
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    def setup(self):
        self.classifier = models.Classifier(
            self.backbone, len(DIMENSIONS), dtype=self.dtype, bn_axis_name=self.bn_axis_name
        )

    def __call__(self, x, train: bool = True):
        features, outputs = self.classifier(x, train=train)
        return features, jnp.tanh(outputs)

    def predict(self, images):
        """Eval-mode valence/arousal (n, 2) of uint8 images; normalisation inside."""
        return self(models.normalize_images(images, self.dtype), train=False)[1]


def create_va_model(config, bn_axis_name: str | None = None) -> VARegressor:
    """The regressor of `config.model` (backbone, dtype)."""
    backbone, _ = backbones.BACKBONES[config.model.backbone]
    return VARegressor(
        backbone=backbone, dtype=jnp.dtype(config.model.dtype), bn_axis_name=bn_axis_name
    )


def signature(config, num_train_rows: int) -> dict[str, Any]:
    """The config values that fix the shapes of a VA train state; its `task` keeps an LDLVA
    workdir from ever being resumed or restored as a VA one, or back."""
    return {
        "task": config_fields.VA,
        "backbone": config.model.backbone,
        "input_size": int(config.input_size),
        "num_train_rows": int(num_train_rows),
    }


@flax.struct.dataclass
class VAState:
    """All mutable state of a VA run: one orbax save and restore covers it.

    Attributes:
      step: train steps taken (fixes the data position and the LR).
      params: model parameters, float32.
      batch_stats: BatchNorm running statistics.
      opt_state: Adam's state.
      rng: the base PRNG key; each step folds its step number in.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array


# --------------------------------------------------------------------------------------------
# Losses and metrics.


def ccc(predictions, targets):
    """Lin's concordance correlation per column: 2 cov / (var_p + var_t + (mean_p - mean_t)^2).

    Population (1/n) moments over the rows of (n, 2) arrays; returns (2,).
    """
    mean_p, mean_t = predictions.mean(axis=0), targets.mean(axis=0)
    var_p = jnp.square(predictions - mean_p).mean(axis=0)
    var_t = jnp.square(targets - mean_t).mean(axis=0)
    cov = ((predictions - mean_p) * (targets - mean_t)).mean(axis=0)
    return 2.0 * cov / (var_p + var_t + jnp.square(mean_p - mean_t) + CCC_EPSILON)


def va_loss(predictions, targets, kind: str):
    """'mse': mean squared error over rows and both dimensions; 'ccc': 1 - mean CCC."""
    if kind == "mse":
        return jnp.square(predictions - targets).mean()
    if kind == "ccc":
        return 1.0 - ccc(predictions, targets).mean()
    raise ValueError(f"config.va_loss={kind!r} is not one of {config_fields.VA_LOSSES}")


def batch_metrics(loss, predictions, targets) -> dict[str, jax.Array]:
    """The train metrics of one batch: the loss, RMSE and CCC per dimension."""
    rmse = jnp.sqrt(jnp.square(predictions - targets).mean(axis=0))
    concordance = ccc(predictions, targets)
    metrics = {"loss": loss}
    for i, name in enumerate(DIMENSIONS):
        metrics[f"rmse_{name}"] = rmse[i]
        metrics[f"ccc_{name}"] = concordance[i]
    return metrics


def va_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    """RMSE and CCC per dimension (and their means) of a whole set, in float64 on the host."""
    predictions = np.asarray(predictions, np.float64)
    targets = np.asarray(targets, np.float64)
    if predictions.shape != targets.shape or predictions.ndim != 2 or predictions.shape[1] != 2:
        raise ValueError(
            f"predictions {predictions.shape} and targets {targets.shape} must both be (n, 2)"
        )
    if len(predictions) == 0:
        raise ValueError("no examples to evaluate")
    rmse = np.sqrt(np.square(predictions - targets).mean(axis=0))
    mean_p, mean_t = predictions.mean(axis=0), targets.mean(axis=0)
    cov = ((predictions - mean_p) * (targets - mean_t)).mean(axis=0)
    spread = predictions.var(axis=0) + targets.var(axis=0) + (mean_p - mean_t) ** 2
    concordance = 2.0 * cov / (spread + CCC_EPSILON)
    results: dict[str, Any] = {}
    for i, name in enumerate(DIMENSIONS):
        results[f"rmse_{name}"] = float(rmse[i])
        results[f"ccc_{name}"] = float(concordance[i])
    results["rmse"] = float(rmse.mean())
    results["ccc"] = float(concordance.mean())
    results["num_examples"] = len(predictions)
    return results


# --------------------------------------------------------------------------------------------
# Steps.


def make_va_train_step(model: VARegressor, tx: optax.GradientTransformation, loss_kind: str):
    """Returns `train_step(state, batch) -> (state, metrics)`; batch: `image` uint8 (B,H,W,3),
    `va` float32 (B, 2). One program: forward in train mode, loss, gradients, Adam, BN update.
    """
    if loss_kind not in config_fields.VA_LOSSES:
        raise ValueError(f"config.va_loss={loss_kind!r} is not one of {config_fields.VA_LOSSES}")

    def train_step(state: VAState, batch):
        images = models.normalize_images(batch["image"], model.dtype)
        targets = batch["va"]
        rng = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            (_, predictions), updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": rng},
            )
            loss = va_loss(predictions, targets, loss_kind)
            return loss, (updates["batch_stats"], batch_metrics(loss, predictions, targets))

        grads, (batch_stats, metrics) = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            batch_stats=batch_stats,
            opt_state=opt_state,
        )
        return new_state, metrics

    return train_step


def make_va_predict(model: VARegressor):
    """Returns `predict(variables, images) -> va (n, 2)` for uint8 images (eval-mode BN)."""

    def predict(variables, images):
        return model.apply(variables, images, method=VARegressor.predict)

    return predict
