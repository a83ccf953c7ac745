"""Orbax checkpoints of the whole train state: the latest ones and the best by validation.

Each checkpoint holds the `TrainState` and a small JSON `meta` item with the model signature
(what must match for a restore to make sense) and the run's bookkeeping (best validation
accuracy, evaluation history). A mismatched signature is reported before anything is restored
or written, so a workdir is never overwritten by another model's run.

A resumed run starts from the newest latest checkpoint that reads back. Newer ones that do not
(a truncated file, a missing item, a half-copied directory) are moved to
`checkpoints/damaged/`, never deleted, with a warning naming them; when none reads back, the
run stops and nothing is moved.
"""

import contextlib
import copy
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

LATEST = "latest"
BEST = "best"
DAMAGED = "damaged"  # checkpoints/damaged/: where unreadable checkpoints are set aside


def parse_checkpoint(checkpoint: str) -> tuple[str, int | None]:
    """'latest', 'best' or a step number -> (which series, step or None for its newest)."""
    if checkpoint in (LATEST, BEST):
        return checkpoint, None
    if checkpoint.isdigit():
        return LATEST, int(checkpoint)
    raise ValueError(f"checkpoint={checkpoint!r}: use 'latest', 'best' or a step number")


class CheckpointMismatchError(ValueError):
    """A checkpoint in the workdir was written by a different model or data set."""


class CheckpointReadError(RuntimeError):
    """A checkpoint's files cannot be read back (damaged, or written by other code)."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (e.g. the disk is full); the earlier ones are kept."""


# Where TensorStore's messages turn from the cause to pages of its own specification.
_TENSORSTORE_DETAILS = (" [tensorstore_spec=", " See full TensorStore details")


def _one_line(error: BaseException) -> str:
    """`Type: first line of the message`, without TensorStore's specification dump."""
    message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
    line = (str(message).strip().splitlines() or [""])[0]
    for marker in _TENSORSTORE_DETAILS:
        line = line.split(marker)[0]
    return f"{type(error).__name__}: {line}"


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
        self.directory = directory = pathlib.Path(workdir).absolute() / "checkpoints"
        self.managers = {
            LATEST: ocp.CheckpointManager(
                directory / LATEST,
                options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=False),
            ),
            BEST: ocp.CheckpointManager(
                directory / BEST,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=1, best_fn=lambda metrics: metrics["accuracy"], create=False
                ),
            ),
        }

    def latest_step(self, which: str = LATEST) -> int | None:
        return self.managers[which].latest_step()

    def find(self, checkpoint: str) -> tuple[str, int]:
        """(series, step) of 'latest', 'best' or a step number; a step is looked up in the
        latest series, then the best one (the best checkpoint's step is often no longer among
        the latest)."""
        which, step = parse_checkpoint(checkpoint)
        if step is not None and step not in self.managers[LATEST].all_steps():
            if step in self.managers[BEST].all_steps():
                return BEST, step
            raise FileNotFoundError(
                f"no checkpoint at step {step} in {self.directory} (latest: "
                f"{sorted(self.managers[LATEST].all_steps())}, best: "
                f"{sorted(self.managers[BEST].all_steps())})"
            )
        return which, self.existing_step(which, step)

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

    def _restore(self, which: str, step: int | None, args: ocp.args.Composite):
        """The manager's restore of an existing step; failing files raise CheckpointReadError
        naming the checkpoint."""
        step = self.existing_step(which, step)
        try:
            return self.managers[which].restore(step, args=args)
        except (jax.errors.JaxRuntimeError, MemoryError):
            raise  # the device or the host, not the files
        except Exception as error:  # noqa: BLE001 - orbax and TensorStore raise many kinds
            raise CheckpointReadError(
                f"cannot read the checkpoint {self.managers[which].directory / str(step)} "
                f"({_one_line(error)})"
            ) from error

    def read_meta(self, which: str = LATEST, step: int | None = None) -> dict[str, Any]:
        """The JSON meta item of a checkpoint (the latest by default)."""
        return self._restore(which, step, ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

    def _newest_readable_meta(self, which: str) -> dict[str, Any] | None:
        for step in sorted(self.managers[which].all_steps(), reverse=True):
            try:
                return self.read_meta(which, step)
            except CheckpointReadError as error:
                logging.warning("%s; looking at an earlier one", error)
        return None

    def check_signature(self, signature: dict[str, Any]) -> None:
        """Raises CheckpointMismatchError if a stored checkpoint has another signature (the
        newest readable one of each series is compared)."""
        for which, manager in self.managers.items():
            meta = self._newest_readable_meta(which)
            if meta is None:
                continue
            stored = meta["signature"]
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
        restored = self._restore(
            which,
            step,
            ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["meta"]

    def resume(self, target):
        """(state, meta) of the newest latest checkpoint that reads back into `target`, or None
        when there is no checkpoint.

        Newer checkpoints that fail while an older one reads back are damaged: they are moved
        to checkpoints/damaged/ with a warning. If none reads back (damaged, or not this
        code's state), the newest one's CheckpointReadError is raised and nothing is moved.
        """
        failures = []
        for step in sorted(self.managers[LATEST].all_steps(), reverse=True):
            try:
                restored = self.restore(target, LATEST, step)
            except CheckpointReadError as error:
                logging.warning("%s; trying an earlier one", error)
                failures.append((step, error))
                continue
            for failed_step, error in failures:
                self._set_aside(LATEST, failed_step, error)
            if failures:
                self.managers[LATEST].reload()
            return restored
        if failures:
            raise failures[0][1]
        return None

    def _set_aside(self, which: str, step: int, error: CheckpointReadError) -> None:
        """Moves an unreadable checkpoint to checkpoints/damaged/WHICH-STEP (process 0; the
        others wait), so the resumed run can save that step again."""
        if jax.process_index() == 0:
            destination = self.directory / DAMAGED / f"{which}-{step}"
            copies = 0
            while destination.exists():
                copies += 1
                destination = self.directory / DAMAGED / f"{which}-{step}.{copies}"
            destination.parent.mkdir(parents=True, exist_ok=True)
            pathlib.Path(self.managers[which].directory / str(step)).rename(destination)
            logging.warning(
                "Damaged checkpoint moved to %s; resuming from an earlier one: %s",
                destination,
                error,
            )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside {which} checkpoint {step}")

    def restore_fields(self, target, which: str = LATEST, step: int | None = None) -> dict:
        """Only some fields of the saved state, on one device.

        `target` maps field names ('params', 'batch_stats', 'theta', ...) to their abstract
        values (shape and dtype structs); nothing else of the state is read.
        """
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        restore_args = jax.tree.map(lambda _: ocp.ArrayRestoreArgs(sharding=device), target)
        restored = self._restore(
            which,
            step,
            ocp.args.Composite(
                state=ocp.args.PyTreeRestore(
                    item=target, restore_args=restore_args, partial_restore=True
                )
            ),
        )
        return {field: restored["state"][field] for field in target}

    def save(self, state, meta: dict[str, Any], which: str = LATEST, metrics=None) -> None:
        """Saves asynchronously; `metrics` (with 'accuracy') ranks the best checkpoints.

        A step that is already saved is skipped: a run resumed from an earlier checkpoint
        replays the interrupted run exactly and reaches the same state there. A failure of
        this save or of the previous one raises CheckpointWriteError.
        """
        manager = self.managers[which]
        step = int(state.step)
        if step in manager.all_steps():
            return
        with self._writing(which):
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    # A copy: the save finishes in the background while the caller goes on.
                    meta=ocp.args.JsonSave(copy.deepcopy(meta)),
                ),
                metrics=metrics,
                force=True,
            )

    def wait_until_finished(self) -> None:
        for which, manager in self.managers.items():
            with self._writing(which):
                manager.wait_until_finished()

    @contextlib.contextmanager
    def _writing(self, which: str):
        """Reports a failed (possibly asynchronous) save as CheckpointWriteError, naming the
        directory and the steps it still holds."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - orbax and TensorStore raise many kinds
            manager = self.managers[which]
            manager.reload()
            raise CheckpointWriteError(
                f"cannot save a checkpoint in {manager.directory} ({_one_line(error)}); "
                f"the checkpoints saved before it are kept (steps {sorted(manager.all_steps())})"
            ) from error

    def close(self) -> None:
        for manager in self.managers.values():
            manager.close()
