"""Reading and copying the workdirs the tests train: file digests, the latest state, a copy."""

import hashlib
import pathlib
import shutil

import jax

from tests.helpers.tiny import NUM_TRAIN


def file_digests(directory: pathlib.Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `directory`: equal before and after means
    nothing in it changed."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def latest_state(config, workdir, step=None, which="latest"):
    """(state, meta) of a workdir's latest checkpoint (or `step`, or the `which="best"` one)
    trained on `synthetic_dir`."""
    from ldl_jax import checkpointing, models
    from ldl_jax.train_state import create_optimizer, create_train_state

    model = models.create_model(config)
    tx = create_optimizer(config, 1)
    target = jax.eval_shape(lambda: create_train_state(config, model, tx, NUM_TRAIN))
    checkpoints = checkpointing.Checkpoints(workdir)
    try:
        return checkpoints.restore(target, which, step)
    finally:
        checkpoints.close()


def copy_workdir(source: pathlib.Path, destination: pathlib.Path) -> pathlib.Path:
    """A copy of the finished run in `source` at `destination` (which may exist, empty), as
    the run left it: without the `eval/` reports that readers of `source` may have added."""
    source = pathlib.Path(source)

    def ignore(directory, names):
        return ["eval"] if pathlib.Path(directory) == source and "eval" in names else []

    shutil.copytree(source, destination, ignore=ignore, dirs_exist_ok=True)
    return pathlib.Path(destination)
