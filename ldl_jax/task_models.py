"""Each task's model, as the layers below the training loop need it.

Restoring a checkpoint (`ldl_jax.inference`) and checking that a workdir holds the configured
model need, for `config.task`, the model to rebuild and the config values that fix its state's
shapes (the checkpoint signature). The training loop's half of each task, its state, step and
evaluation, is `ldl_jax.tasks`, which builds on this one.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

from ldl_jax import config_fields, models, va_model


@dataclasses.dataclass(frozen=True)
class TaskModel:
    """A task's model: `create_model(config, bn_axis_name=None)` and `signature(config,
    num_train_rows)`, the config values its checkpoints are checked against."""

    create_model: Callable[..., Any]
    signature: Callable[[Any, int], dict[str, Any]]


MODELS = {
    config_fields.LDL: TaskModel(models.create_model, models.signature),
    config_fields.VA: TaskModel(va_model.create_va_model, va_model.signature),
}


def of(config) -> TaskModel:
    """The model of `config.task`."""
    if config.task not in MODELS:
        raise ValueError(f"config.task={config.task!r} is not one of {sorted(MODELS)}")
    return MODELS[config.task]


def signature(config, num_train_rows: int) -> dict[str, Any]:
    """The checkpoint signature of `config`'s model trained on `num_train_rows` rows."""
    return of(config).signature(config, num_train_rows)
