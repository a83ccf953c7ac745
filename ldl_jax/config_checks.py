"""One place that checks a config's own values, before anything is read or written.

`validate_config(config)` raises ValueError naming the field (`config.FIELD=VALUE`) on the
first mistake it finds. The data (row counts, labels, neighbour lists) is checked when read,
by `ldl_jax.data`; what depends on both, such as a batch larger than the training set, is
checked there too.
"""

import jax

from ldl_jax import backbones, config_fields
from ldl_jax.config_fields import LDL, VA

POSITIVE_FIELDS = ("batch_size", "num_neighbors", "input_size", "eval_batch_size")


def validate_config(config) -> None:
    """Checks the values of a training or evaluation config (either task).

    Raises:
      ValueError: naming the config field and what it must be.
    """
    task = config.task
    if task not in config_fields.TASKS:
        raise ValueError(f"config.task={task!r} is not one of {config_fields.TASKS}")
    if config.model.backbone not in backbones.BACKBONES:
        raise ValueError(
            f"config.model.backbone={config.model.backbone!r} is not one of "
            f"{sorted(backbones.BACKBONES)}"
        )
    if config.model.dtype not in config_fields.DTYPES:
        raise ValueError(f"config.model.dtype={config.model.dtype!r}: use 'float32' or 'bfloat16'")
    if len(config.class_names) != config.num_classes:
        raise ValueError(
            f"config.class_names has {len(config.class_names)} names but "
            f"config.num_classes={config.num_classes}"
        )
    for field in POSITIVE_FIELDS:
        if config[field] <= 0:
            raise ValueError(f"config.{field}={config[field]} must be positive")
    _check_allowed(config, "neighbors", config_fields.NEIGHBOR_MODES)
    if task == LDL:
        _check_allowed(config, "lamb_class_mean", config_fields.LAMB_CLASS_MEANS)
        _check_allowed(config, "neighbor_distribution", config_fields.NEIGHBOR_DISTRIBUTIONS)
        _check_loss(config)
    if not config.data.train_csv:
        raise ValueError("config.data.train_csv is empty: set it to the training CSV")
    _check_parallel(config)
    placement = config.data.placement
    if placement not in config_fields.PLACEMENTS:
        raise ValueError(
            f"config.data.placement={placement!r} is not one of {config_fields.PLACEMENTS}"
        )
    if task == VA:
        _check_va(config)


def _check_allowed(config, field: str, allowed: tuple[str, ...]) -> None:
    if config[field] not in allowed:
        raise ValueError(f"config.{field}={config[field]!r} is not one of {allowed}")


def _check_loss(config) -> None:
    _check_allowed(config, "loss", config_fields.LOSSES)
    if not 0.0 < config.gce_q <= 1.0:
        raise ValueError(f"config.gce_q={config.gce_q} must be in (0, 1]")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"config.label_smoothing={config.label_smoothing} must be in [0, 1)")


def _check_parallel(config) -> None:
    _check_allowed(config, "parallel", config_fields.PARALLEL_MODES)
    if config.batch_size % jax.process_count():
        raise ValueError(
            f"config.batch_size={config.batch_size} does not divide over "
            f"{jax.process_count()} processes"
        )
    num_devices = jax.device_count()
    for field in ("batch_size", "eval_batch_size"):
        if config[field] % num_devices:
            raise ValueError(
                f"config.{field}={config[field]} does not divide over {num_devices} devices"
            )
    if config.parallel == "mesh" and not config.sync_batch_norm:
        raise ValueError(
            "config.parallel='mesh' computes BatchNorm over the global batch: set "
            "config.sync_batch_norm=True, or use config.parallel='pmap' for per-device BN"
        )


def _check_va(config) -> None:
    _check_allowed(config, "va_loss", config_fields.VA_LOSSES)
    if config.data.placement == "device":
        raise ValueError(
            "config.data.placement='device': the VA task augments its images on the host; "
            "use 'auto' or 'host'"
        )
    if config.parallel != "mesh":
        raise ValueError(
            f"config.parallel={config.parallel!r}: the VA task runs with 'mesh' only (one "
            "global program, exact CCC over the global batch)"
        )
