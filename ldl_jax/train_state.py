"""The train state: every value that changes during training, in one pytree.

A checkpoint saves and restores exactly this, so a resumed run continues bit for bit.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from ldl_jax import backbones, config_fields, inference, memory_bank, models, va_model


@flax.struct.dataclass
class TrainState:
    """All mutable training state.

    Attributes:
      step: the number of train steps taken (also fixes the data position and the LR).
      params: model parameters (classifier and AdaptiveSimNet), float32.
      batch_stats: BatchNorm running statistics.
      opt_state: Adam's state for `params`.
      theta: (N,) the per-training-row lambda logits; lambda = sigmoid(theta).
      theta_momentum: (N,) the SGD momentum of `theta`.
      centers: (C, D) the class centres of the centre loss.
      rng: the base PRNG key; each step folds its step number in.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    theta: jax.Array
    theta_momentum: jax.Array
    centers: jax.Array
    rng: jax.Array


@flax.struct.dataclass
class BankTrainState(TrainState):
    """The train state of `config.neighbors = 'memory_bank'`: also the neighbour memory bank.

    A subclass rather than an optional field, so that the checkpoints of the faithful method
    keep the exact tree they always had.

    Attributes:
      bank: per training row, the softmax output (N, C) and feature (N, D) of its last
        central pass (`ldl_jax.memory_bank`).
    """

    bank: memory_bank.MemoryBank


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """lr * lr_decay^k after the k-th epoch boundary of `config.lr_steps`."""
    boundaries = {int(epoch * steps_per_epoch): config.lr_decay for epoch in config.lr_steps}
    return optax.piecewise_constant_schedule(config.lr, boundaries)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam with Keras' epsilon (1e-7) on the model parameters; no weight decay or clipping."""
    return optax.adam(learning_rate_schedule(config, steps_per_epoch), b1=0.9, b2=0.999, eps=1e-7)


def create_train_state(
    config, model: models.LDLVA, tx: optax.GradientTransformation, num_train_rows: int
) -> TrainState:
    """Initialises parameters, optimiser state, theta (= lamb_init) and zero centres (and,
    with `config.neighbors = 'memory_bank'`, a zero bank that `memory_bank.fill` sets).

    With `config.model.pretrained` set, the backbone's parameters and BatchNorm statistics come
    from that converted folder or workdir (`ldl_jax.pretrained`); the head and AdaptiveSimNet
    start fresh.
    """
    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng, step_rng = jax.random.split(rng, 3)
    rngs = {"params": init_rng, "dropout": dropout_rng}
    variables = jax.jit(
        lambda: models.init_variables(model, rngs, config.input_size, config.num_neighbors)
    )()
    variables = inference.load_configured_backbone(config, variables)
    params = variables["params"]
    feature_dim = backbones.BACKBONE_FEATURE_DIMS[config.model.backbone]
    fields = dict(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(params),
        theta=jnp.full((num_train_rows,), config.lamb_init, jnp.float32),
        theta_momentum=jnp.zeros((num_train_rows,), jnp.float32),
        centers=jnp.zeros((config.num_classes, feature_dim), jnp.float32),
        rng=step_rng,
    )
    if config_fields.uses_memory_bank(config):
        bank = memory_bank.empty(num_train_rows, config.num_classes, feature_dim)
        return BankTrainState(**fields, bank=bank)
    return TrainState(**fields)


def create_va_state(
    config, model: va_model.VARegressor, tx: optax.GradientTransformation
) -> va_model.VAState:
    """Initialises the regressor (from `config.model.pretrained`'s backbone if set) and Adam."""
    rng = jax.random.PRNGKey(config.seed)
    init_rng, dropout_rng, step_rng = jax.random.split(rng, 3)
    rngs = {"params": init_rng, "dropout": dropout_rng}
    variables = jax.jit(lambda: models.init_variables(model, rngs, config.input_size))()
    variables = inference.load_configured_backbone(config, variables)
    return va_model.VAState(
        step=jnp.zeros((), jnp.int32),
        params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]),
        rng=step_rng,
    )
