"""A trained model for inference: its config and its parameters, nothing of the training state.

Shared by `ldl_jax.predict` and `ldl_jax.export`: the workdir's `config.json` rebuilds the
model, and only `params` and `batch_stats` are read from the checkpoint (not theta, the centres
or the optimiser state).
"""

import dataclasses
import functools
import json
import pathlib

import jax
import ml_collections
import numpy as np

from ldl_jax import checkpointing, models, steps
from ldl_jax.train_state import create_optimizer, create_train_state


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
        _, logits = self.model.apply(
            variables, steps.normalize_images(images, self.model.dtype), train=False
        )
        return jax.nn.softmax(logits)

    @functools.cached_property
    def _compiled(self):
        return jax.jit(self.apply_probabilities)

    def probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class distributions of any number of images, through one compiled function.

        Images are padded to whole batches so the function compiles once.
        """
        outputs = []
        for start in range(0, len(images), batch_size):
            chunk = np.asarray(images[start : start + batch_size])
            padded = np.zeros((batch_size, *chunk.shape[1:]), np.uint8)
            padded[: len(chunk)] = chunk
            outputs.append(np.asarray(self._compiled(self.variables, padded))[: len(chunk)])
        if not outputs:
            return np.zeros((0, len(self.class_names)), np.float32)
        return np.concatenate(outputs)


def read_config(workdir) -> ml_collections.ConfigDict:
    """The config a training run wrote into its workdir."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {workdir} a training workdir?")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def restore_fields(workdir, fields, checkpoint: str = "latest"):
    """(config, {field: value}, step): the named train-state fields of a workdir's checkpoint.

    `fields` are TrainState attributes ('params', 'batch_stats', 'theta', ...); nothing else of
    the state is read.
    """
    config = read_config(workdir)
    checkpoints = checkpointing.Checkpoints(workdir)
    which, step = checkpointing.parse_checkpoint(checkpoint)
    step = checkpoints.existing_step(which, step)
    meta = checkpoints.read_meta(which, step)
    model = models.create_model(config)
    num_rows = meta["signature"]["num_train_rows"]
    tx = create_optimizer(config, steps_per_epoch=1)
    abstract = jax.eval_shape(lambda: create_train_state(config, model, tx, num_rows))
    restored = checkpoints.restore_fields(abstract, fields, which, step)
    checkpoints.close()
    return config, restored, step


def load(workdir, checkpoint: str = "latest") -> InferenceModel:
    """Restores the model of a workdir from its latest, best or a given step's checkpoint."""
    config, variables, step = restore_fields(workdir, ("params", "batch_stats"), checkpoint)
    return InferenceModel(config, models.create_model(config), variables, step)
