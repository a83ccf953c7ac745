"""A trained model for inference, and the one way a checkpoint's model variables are restored.

`restore_variables(workdir, config, checkpoint)` is what evaluation, prediction, export,
inspection, the VA annotator and pretrained-from-workdir loading share: the model is rebuilt
from the config (the workdir's `config.json` by default) and only the named fields of the state
are read from the checkpoint (`params` and `batch_stats`, or also `theta`), into shapes that
come from the model's init under `jax.eval_shape` and the checkpoint signature's
`num_train_rows`: no optimiser is built and nothing else of the state is read.
"""

import dataclasses
import functools
import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from ldl_jax import checkpointing, models, va_model
from ldl_jax.data import batches

VARIABLES = ("params", "batch_stats")


@dataclasses.dataclass(frozen=True)
class Restored:
    """What `restore_variables` read: the config, the rebuilt model and the fields."""

    config: ml_collections.ConfigDict
    model: Any  # models.LDLVA or va_model.VARegressor
    fields: dict[str, Any]
    which: str
    step: int

    @property
    def variables(self) -> dict:
        return {name: self.fields[name] for name in VARIABLES}


def read_config(workdir) -> ml_collections.ConfigDict:
    """The config a training run wrote into its workdir."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {workdir} a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def create_model(config):
    """The model of `config.task`: LDLVA, or the valence/arousal regressor."""
    if config.get("task", "ldl") == va_model.TASK:
        return va_model.create_va_model(config)
    return models.create_model(config)


def restore_variables(
    workdir, config=None, checkpoint: str = "latest", fields=VARIABLES
) -> Restored:
    """Restores the named state fields of a workdir's latest, best or given step's checkpoint.

    Args:
      workdir: a training run's workdir (LDLVA or VA).
      config: the config to rebuild the model from; None reads the workdir's `config.json`.
        Its signature must match the checkpoint's.
      checkpoint: 'latest', 'best' or a step number.
      fields: state fields to read: 'params', 'batch_stats', and for LDLVA 'theta'.

    Raises:
      FileNotFoundError: no such workdir, config or checkpoint.
      CheckpointMismatchError: the checkpoint was written by another model.
    """
    config = read_config(workdir) if config is None else config
    checkpoints = checkpointing.Checkpoints(workdir)
    try:
        which, step = checkpointing.parse_checkpoint(checkpoint)
        step = checkpoints.existing_step(which, step)
        num_rows = checkpoints.read_meta(which, step)["signature"]["num_train_rows"]
        checkpoints.check_signature(checkpointing.model_signature(config, num_rows))
        model = create_model(config)
        abstract = dict(models.abstract_variables(model, config.input_size))
        abstract["theta"] = jax.ShapeDtypeStruct((num_rows,), np.float32)
        target = {name: abstract[name] for name in fields}
        restored = checkpoints.restore_fields(target, which, step)
    finally:
        checkpoints.close()
    return Restored(config, model, restored, which, step)


def predict_in_batches(predict, variables, images, batch_size: int, place=None):
    """`predict(variables, uint8 batch)` over any number of images, in zero-padded batches of
    `batch_size` (one compilation); the output pytree's leaves are concatenated over images.

    Without `place`, `predict` takes each whole numpy batch. With it, each process feeds its
    slice of every global batch through `place` (e.g. onto a device mesh), and `predict`
    returns the global batch's outputs. `images` must not be empty.
    """
    share = {}
    if place is not None:
        share = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    outputs = [
        jax.device_get(
            predict(variables, batch["image"] if place is None else place(batch["image"]))
        )
        for batch in batches.eval_batches(
            images, np.zeros(len(images), np.int32), batch_size=batch_size, **share
        )
    ]
    # Only the last batch is padded, at its end.
    return jax.tree.map(lambda *leaves: np.concatenate(leaves)[: len(images)], *outputs)


@dataclasses.dataclass(frozen=True)
class InferenceModel:
    """A restored classifier; `probabilities(images)` maps uint8 (n, S, S, 3) to (n, C)."""

    config: ml_collections.ConfigDict
    model: models.LDLVA
    variables: dict
    step: int

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def input_size(self) -> int:
        return int(self.config.input_size)

    def apply_probabilities(self, variables, images):
        """Pure function of (variables, uint8 images) -> probabilities, for jit or jax2tf."""
        _, logits = self.model.apply(variables, images, method=models.LDLVA.classify)
        return jax.nn.softmax(logits)

    @functools.cached_property
    def _compiled(self):
        return jax.jit(self.apply_probabilities)

    def probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class distributions of any number of images, through one compiled function.

        Images are padded to whole batches so the function compiles once.
        """
        if len(images) == 0:
            return np.zeros((0, len(self.class_names)), np.float32)
        return predict_in_batches(self._compiled, self.variables, images, batch_size)


def load(workdir, checkpoint: str = "latest") -> InferenceModel:
    """Restores the model of a workdir from its latest, best or a given step's checkpoint."""
    restored = restore_variables(workdir, checkpoint=checkpoint)
    return InferenceModel(restored.config, restored.model, restored.variables, restored.step)
