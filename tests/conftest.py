"""Shared fixtures: a tiny config and random batches in the train step's format."""

import hashlib
import pathlib

import jax
import ml_collections
import pytest

from configs import default

# Tests build the same small programs many times (each training run compiles its own step):
# a persistent compilation cache (keyed by the program, so never stale) turns repeats into hits.
XLA_CACHE_DIR = pathlib.Path(__file__).resolve().parents[1] / ".pytest_cache" / "xla"
jax.config.update("jax_compilation_cache_dir", str(XLA_CACHE_DIR))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def make_tiny_config(variant="ldl_jax", **overrides):
    """The base config shrunk to a model and images that run in seconds on a CPU; the
    `ldl_jax` variant by default, so that the tests exercise every deviation's code (tests of
    the reference's behaviour set its fields)."""
    config = default.get_config(variant)
    config.model.backbone = "resnet_tiny"
    config.input_size = 16
    config.pad_size = 2
    config.batch_size = 4
    config.num_neighbors = 3
    config.lr = 1e-3
    config.update(overrides)
    return config


def make_data_config(data_dir, **overrides):
    """The tiny config on a synthetic data set in `data_dir`, training 2 steps."""
    fields = dict(num_train_steps=2, log_every_steps=1, val_interval=2, eval_batch_size=4)
    config = make_tiny_config(**{**fields, **overrides})
    config.data.image_dir = str(data_dir / "images")
    config.data.train_csv = str(data_dir / "train.csv")
    config.data.val_csv = str(data_dir / "val.csv")
    config.data.test_csv = str(data_dir / "test.csv")
    return config


NUM_TRAIN, NUM_VAL, NUM_TEST = 40, 10, 13  # 13 test images: not a multiple of any batch size


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


def synthetic_spec(data_dir) -> ml_collections.ConfigDict:
    """`config.data.synthetic` for a small set at 16x16 with 4 neighbours per row."""
    return ml_collections.ConfigDict(
        dict(
            dir=str(data_dir),
            seed=0,
            num_train=NUM_TRAIN,
            num_val=NUM_VAL,
            num_test=NUM_TEST,
            image_size=16,
            num_neighbors=4,
            class_balance="default",
        )
    )


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    """The `synthetic_spec` set, made once."""
    from ldl_jax import synthetic

    out = tmp_path_factory.mktemp("data") / "synthetic"
    spec = synthetic_spec(out)
    synthetic.make_synthetic_fer(out, **{k: v for k, v in spec.items() if k != "dir"})
    return out


@pytest.fixture(scope="session")
def trained_workdir(synthetic_dir, tmp_path_factory):
    """A workdir of the tiny config trained 2 steps on `synthetic_dir` (evaluation, prediction
    and export tests read it; they may add files under its eval/ only)."""
    from ldl_jax import train

    workdir = tmp_path_factory.mktemp("trained")
    train.train_and_evaluate(make_data_config(synthetic_dir), workdir)
    return workdir


@pytest.fixture
def tiny_config():
    return make_tiny_config()
