"""The tiny config (a model and images that run in seconds on a CPU), the small synthetic set
the end-to-end tests train on, and the compilation cache they share."""

import pathlib

import ml_collections

from configs import default

# Tests build the same small programs many times (each training run compiles its own step):
# a persistent compilation cache (keyed by the program, so never stale) turns repeats into hits.
# tests/conftest.py and the trainer's tiny config module (tests/helpers/trainer_cli.py) turn it
# on with `use_compilation_cache()`; other subprocesses get `compilation_cache_env()`.
XLA_CACHE_DIR = pathlib.Path(__file__).resolve().parents[2] / ".pytest_cache" / "xla"
MIN_COMPILE_TIME_SECS = 0.5


def use_compilation_cache() -> None:
    """Turns the tests' persistent compilation cache on in this process."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(XLA_CACHE_DIR))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)


def compilation_cache_env() -> dict[str, str]:
    """The environment variables that give a subprocess's JAX the tests' compilation cache."""
    return {
        "JAX_COMPILATION_CACHE_DIR": str(XLA_CACHE_DIR),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": str(MIN_COMPILE_TIME_SECS),
    }


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


# A noise study (tools/noise_study.py) of tiny runs: one seed, jobs in this process, the tiny
# model on 16 px images, one epoch. The study tests add their sizes, methods and noise levels.
TINY_STUDY_FLAGS = [
    "--num_test=13",
    "--image_size=16",
    "--seeds=0",
    "--no-alternatives",
    "--jobs=1",
    "--val_fraction=0.2",
    "--val_every_steps=3",
    "--set=model.backbone=resnet_tiny",
    "--set=input_size=16",
    "--set=pad_size=2",
    "--set=batch_size=4",
    "--set=num_neighbors=3",
    "--set=num_epochs=1",
    "--set=eval_batch_size=8",
    "--set=log_every_steps=5",
]
