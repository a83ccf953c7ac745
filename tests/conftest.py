"""Session-wide fixtures: the small synthetic set, the runs trained on it once for every test
that reads them, and the tiny config. The helpers they are built from are in tests/helpers/."""

import pandas as pd
import pytest

from tests.helpers.tiny import (
    make_data_config,
    make_tiny_config,
    synthetic_spec,
    use_compilation_cache,
)
from tests.helpers.workdirs import copy_workdir

use_compilation_cache()


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
    and export tests read it; they may add files under its eval/ only; tests that write to it
    otherwise take `trained_copy`)."""
    from ldl_jax import train

    workdir = tmp_path_factory.mktemp("trained")
    train.train_and_evaluate(make_data_config(synthetic_dir), workdir)
    return workdir


@pytest.fixture
def trained_copy(trained_workdir, tmp_path):
    """`tmp_path` holding a copy of `trained_workdir` as its run left it (no eval/ reports):
    the workdir of a test that writes to it."""
    return copy_workdir(trained_workdir, tmp_path)


@pytest.fixture(scope="session")
def noisy_run(synthetic_dir, tmp_path_factory):
    """(workdir, training CSV) of a 4-step run on `synthetic_dir` whose first 6 training labels
    are flipped to the next class (clean labels in `expression_backup`); the inspection tests
    copy the workdir before writing to it, and nobody writes to the CSV."""
    from ldl_jax import train

    root = tmp_path_factory.mktemp("noisy")
    frame = pd.read_csv(synthetic_dir / "train.csv")
    noisy = frame["expression"].to_numpy().copy()
    noisy[:6] = (noisy[:6] + 1) % 7
    train_csv = root / "train_noisy.csv"
    frame.assign(expression_backup=frame["expression"], expression=noisy).to_csv(
        train_csv, index=False
    )
    config = make_data_config(synthetic_dir, num_train_steps=4)
    config.data.train_csv = str(train_csv)
    workdir = root / "run"
    train.train_and_evaluate(config, workdir)
    return workdir, train_csv


@pytest.fixture
def tiny_config():
    return make_tiny_config()
