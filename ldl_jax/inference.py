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
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from ldl_jax import checkpointing, config_fields, models, pretrained, task_models
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
    """The config a training run wrote into its workdir, its missing fields filled."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is {workdir} a training workdir?")
    return config_fields.complete(ml_collections.ConfigDict(json.loads(path.read_text())))


def create_model(config):
    """The model of `config.task`: LDLVA, or the valence/arousal regressor."""
    return task_models.of(config).create_model(config)


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
        which, step = checkpoints.find(checkpoint)
        num_rows = checkpoints.read_meta(which, step)["signature"]["num_train_rows"]
        checkpoints.check_signature(task_models.signature(config, num_rows))
        model = create_model(config)
        abstract = dict(models.abstract_variables(model, config.input_size))
        abstract["theta"] = jax.ShapeDtypeStruct((num_rows,), np.float32)
        target = {name: abstract[name] for name in fields}
        restored = checkpoints.restore_fields(target, which, step)
    finally:
        checkpoints.close()
    return Restored(config, model, restored, which, step)


# --------------------------------------------------------------------------------------------
# Another run's backbone, as config.model.pretrained.


def is_workdir(path) -> bool:
    """Whether `path` is an ldl_jax training workdir (it has a checkpoints/ folder)."""
    return (pathlib.Path(path) / "checkpoints").is_dir()


def read_workdir_backbone(workdir) -> tuple[str, dict[str, Any], int]:
    """(backbone name, {'params', 'batch_stats'}, step) of a workdir's latest checkpoint.

    The model is rebuilt from the checkpoint's signature (task, backbone, classes, input size,
    the memory bank, the prior correction), so the run may have had another task, number of
    classes or training rows.
    """
    checkpoints = checkpointing.Checkpoints(workdir)
    try:
        signature = checkpoints.read_meta(checkpointing.LATEST)["signature"]
    finally:
        checkpoints.close()
    fields = {
        "model": {"backbone": signature["backbone"], "dtype": "float32"},
        "input_size": signature["input_size"],
    }
    for optional in ("task", "num_classes", "neighbors", "prior_correction"):
        if optional in signature:
            fields[optional] = signature[optional]
    restored = restore_variables(workdir, config_fields.complete(ml_collections.ConfigDict(fields)))
    return signature["backbone"], pretrained.get_backbone(restored.variables), restored.step


def read_backbone(path) -> tuple[str, dict[str, Any], str]:
    """(backbone name, {'params', 'batch_stats'}, description) of a folder or a workdir."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config.model.pretrained={str(path)!r} does not exist")
    if is_workdir(path):
        backbone_name, backbone, step = read_workdir_backbone(path)
        return backbone_name, backbone, f"{path} (workdir, latest checkpoint, step {step})"
    backbone_name, backbone = pretrained.read_converted(path)
    return backbone_name, backbone, str(path / pretrained.VARIABLES_FILE)


def load_configured_backbone(config, variables: Mapping[str, Any]) -> dict:
    """Fresh model `variables` with the backbone of `config.model.pretrained`, if set.

    Under `jax.eval_shape` (an abstract state to restore into) there is nothing to load: the
    pretrained backbone has exactly the initialised shapes.
    """
    path = config.model.pretrained
    if not path or any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(variables)):
        return variables
    return load_pretrained_backbone(path, variables, config.model.backbone)


def load_pretrained_backbone(path, variables: Mapping[str, Any], backbone_name: str) -> dict:
    """LDLVA `variables` with the backbone replaced by the pretrained one at `path`.

    Args:
      path: a converted backbone folder or a training workdir (see the module docstring).
      variables: freshly initialised {'params', 'batch_stats'} of the whole model.
      backbone_name: `config.model.backbone`.

    Returns:
      The variables with the backbone's params and BatchNorm statistics from `path`, the head
      and AdaptiveSimNet untouched.

    Raises:
      PretrainedMismatchError: the file holds another backbone, or a key is missing,
        unexpected or of another shape (each named with both shapes).
    """
    stored_name, loaded, source = read_backbone(path)
    return pretrained.merge_backbone(variables, stored_name, loaded, source, backbone_name)
    stored_name, loaded, source = read_backbone(path)


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


def predict_va(predict, variables, images, batch_size: int, place=None) -> np.ndarray:
    """(N, 2) valence/arousal of uint8 images by a regressor's `predict`
    (`predict_in_batches`)."""
    if len(images) == 0:
        return np.zeros((0, 2), np.float32)
    return predict_in_batches(predict, variables, images, batch_size, place).astype(np.float32)


def restore_regressor(workdir, checkpoint: str = "latest", config=None) -> Restored:
    """A VA regressor's workdir restored (`restore_variables`), with its own config by default.

    Raises:
      ValueError: the workdir holds an LDLVA (classification) run, not a VA regressor.
      FileNotFoundError: no such workdir or checkpoint.
    """
    workdir = pathlib.Path(workdir).expanduser().absolute()
    saved_config = read_config(workdir)
    if saved_config.task != config_fields.VA:
        raise ValueError(
            f"{workdir} holds a run with task={saved_config.task!r} (an LDLVA "
            "classifier), not a valence/arousal regressor: train one with a config whose "
            "task is 'va' (e.g. configs/resnet18_affectnet_va.py) and pass its workdir"
        )
    return restore_variables(workdir, config or saved_config, checkpoint)


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
