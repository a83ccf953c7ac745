"""Session-wide fixtures: the small synthetic set, a run trained on it once for the tests that
read it, and the tiny config. The helpers they are built from are in tests/helpers/."""

import jax
import pytest

from tests.helpers.tiny import (
    MIN_COMPILE_TIME_SECS,
    XLA_CACHE_DIR,
    make_data_config,
    make_tiny_config,
    synthetic_spec,
)

jax.config.update("jax_compilation_cache_dir", str(XLA_CACHE_DIR))
jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_SECS)


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
