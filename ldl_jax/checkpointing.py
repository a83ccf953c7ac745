"""Orbax checkpoints of the whole train state: the latest ones and the best by validation.

Each checkpoint holds the `TrainState` and a small JSON `meta` item with the model signature
(what must match for a restore to make sense) and the run's bookkeeping (best validation
accuracy, evaluation history). A mismatched signature is reported before anything is restored
or written, so a workdir is never overwritten by another model's run.
"""

import copy
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

LATEST = "latest"
BEST = "best"


def parse_checkpoint(checkpoint: str) -> tuple[str, int | None]:
    """'latest', 'best' or a step number -> (which series, step or None for its newest)."""
    if checkpoint in (LATEST, BEST):
        return checkpoint, None
    if checkpoint.isdigit():
        return LATEST, int(checkpoint)
    raise ValueError(f"checkpoint={checkpoint!r}: use 'latest', 'best' or a step number")


class CheckpointMismatchError(ValueError):
    """A checkpoint in the workdir was written by a different model or data set."""


def model_signature(config, num_train_rows: int) -> dict[str, Any]:
    """The config values that fix the shapes of the train state.

    A VA regressor's (`config.task = "va"`) carries its task, so an LDLVA workdir is never
    resumed or restored as a VA one, or back; a run with the neighbour memory bank carries
    `neighbors` (its state has the bank), one without keeps the signature it always had.
    """
    if config.get("task", "ldl") == "va":
        return {
            "task": "va",
            "backbone": config.model.backbone,
            "input_size": int(config.input_size),
            "num_train_rows": int(num_train_rows),
        }
    signature = {
        "backbone": config.model.backbone,
        "num_classes": int(config.num_classes),
        "input_size": int(config.input_size),
        "num_train_rows": int(num_train_rows),
    }
    neighbors = config.get("neighbors", "forward")
    if neighbors != "forward":
        signature["neighbors"] = neighbors
    return signature


def _restore_spec(leaf) -> jax.ShapeDtypeStruct:
    """Shape, dtype and sharding to restore a leaf into; unplaced leaves go to one device.

    Restoring into the target's own sharding, never the saved one, is what lets a checkpoint
    written on N devices load on M.
    """
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


class Checkpoints:
    """The latest (every `max_to_keep`) and best checkpoints of one workdir."""

    def __init__(self, workdir, *, max_to_keep: int = 2):
        directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.managers = {
            LATEST: ocp.CheckpointManager(
                directory / LATEST,
                options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
            ),
            BEST: ocp.CheckpointManager(
                directory / BEST,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=lambda metrics: metrics["accuracy"], create=True
                ),
            ),
        }

    def latest_step(self, which: str = LATEST) -> int | None:
        return self.managers[which].latest_step()

    def existing_step(self, which: str, step: int | None) -> int:
        """`step` (the latest if None) after checking that it was saved."""
        manager = self.managers[which]
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"no {which} checkpoint in {manager.directory}")
        elif step not in manager.all_steps():
            raise FileNotFoundError(
                f"no {which} checkpoint at step {step} in {manager.directory} "
                f"(steps: {sorted(manager.all_steps())})"
            )
        return step

    def read_meta(self, which: str = LATEST, step: int | None = None) -> dict[str, Any]:
        """The JSON meta item of a checkpoint (the latest by default)."""
        restored = self.managers[which].restore(
            self.existing_step(which, step),
            args=ocp.args.Composite(meta=ocp.args.JsonRestore()),
        )
        return restored["meta"]

    def check_signature(self, signature: dict[str, Any]) -> None:
        """Raises CheckpointMismatchError if a stored checkpoint has another signature."""
        for which, manager in self.managers.items():
            if manager.latest_step() is None:
                continue
            stored = self.read_meta(which)["signature"]
            if stored != signature:
                differences = {
                    key: (stored.get(key), signature.get(key))
                    for key in {**stored, **signature}
                    if stored.get(key) != signature.get(key)
                }
                raise CheckpointMismatchError(
                    f"{manager.directory} holds a checkpoint of another model or data set "
                    f"(field: (checkpoint, this run) = {differences}); use another --workdir."
                )

    def restore(self, target, which: str = LATEST, step: int | None = None):
        """Restores (state, meta) into the structure and shardings of `target`."""
        abstract = jax.tree.map(_restore_spec, target)
        restored = self.managers[which].restore(
            self.existing_step(which, step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def restore_fields(self, target, which: str = LATEST, step: int | None = None) -> dict:
        """Only some fields of the saved state, on one device.

        `target` maps field names ('params', 'batch_stats', 'theta', ...) to their abstract
        values (shape and dtype structs); nothing else of the state is read.
        """
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), target)
        restored = self.managers[which].restore(
            self.existing_step(which, step),
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=target, restore_args=restore_args, partial_restore=True
                )
            ),
        )
        return {field: restored["state"][field] for field in target}

    def save(self, state, meta: dict[str, Any], which: str = LATEST, metrics=None) -> None:
        """Saves asynchronously; `metrics` (with 'accuracy') ranks the best checkpoints."""
        self.managers[which].save(
            int(state.step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                # A copy: the save finishes in the background while the caller goes on.
                meta=ocp.args.JsonSave(copy.deepcopy(meta)),
            ),
            metrics=metrics,
            force=True,
        )

    def wait_until_finished(self) -> None:
        for manager in self.managers.values():
            manager.wait_until_finished()

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
