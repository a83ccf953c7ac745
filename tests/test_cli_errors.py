"""The trainer's command line on each kind of bad input: one `error:` line naming the culprit,
exit code 2, no traceback, and the workdir untouched. The runs of the bad data and workdir cases
share a module fixture that runs them two at a time.

Each bad-data case stands for one stage at which the trainer checks its input (a table's cells,
a file that is absent, images that are absent or do not decode, the config against the data);
every message of a stage is tested in-process, without a trainer per case
(tests/data/test_tables.py, tests/data/test_images.py, tests/test_config_checks.py)."""

import concurrent.futures
import os
import shutil

import pandas as pd
import pytest

from ldl_jax import workdir_lock
from tests.helpers import trainer_cli
from tests.helpers.workdirs import copy_workdir, file_digests

pytestmark = pytest.mark.slow  # every test runs the trainer's command line


# name -> (how to spoil the data, flags, what the error line says)
BAD_DATA = {
    "label_out_of_range": (
        lambda f: f.assign(expression=f["expression"].where(f.index != 3, 9)),
        (),
        "train.csv, line 5 (row index 3), column 'expression': 9 is outside [0, 7)",
    ),
    "missing_csv": (
        lambda f: f,
        ("--config.data.train_csv={data}/absent.csv",),
        "absent.csv: file not found",
    ),
    "missing_image": (
        "remove",
        (),
        "train.csv, column 'subDirectory_filePath': 1 of 40 image files are missing",
    ),
    "corrupt_image": ("corrupt", (), "(row index 0): cannot read or decode the image"),
    "wrong_num_classes": (
        lambda f: f,
        ("--config.num_classes=5",),
        "config.class_names has 7 names but config.num_classes=5",
    ),
}
# name -> flags on a workdir trained for 2 steps; what the error line says
BAD_WORKDIR = {
    "checkpoint_of_another_model": (
        ("--config.model.backbone=ir_tiny",),
        "holds a checkpoint of another model or data set",
    ),
    "checkpoint_with_the_prior_correction": (
        ("--config.prior_correction=False",),
        "holds a checkpoint of another model or data set",
    ),
    "unknown_checkpoint_step": (
        ("--mode=eval", "--checkpoint=7"),
        "no checkpoint at step 7 in",
    ),
    "unknown_checkpoint_name": (
        ("--mode=eval", "--checkpoint=newest"),
        "checkpoint='newest': use 'latest', 'best' or a step number",
    ),
}


def _bad_data(synthetic_dir, data, spoil):
    """A copy of the synthetic set in `data` whose train.csv or first image is spoilt."""
    shutil.copytree(synthetic_dir, data)
    first_image = data / "images" / pd.read_csv(data / "train.csv")["subDirectory_filePath"][0]
    if spoil == "remove":
        first_image.unlink()
    elif spoil == "corrupt":
        first_image.write_bytes(b"not an image")
    else:
        spoil(pd.read_csv(data / "train.csv")).to_csv(data / "train.csv", index=False)


@pytest.fixture(scope="module")
def outcomes(synthetic_dir, trained_workdir, tmp_path_factory):
    """name -> (finished run, its workdir, the workdir's file digests before it or None)."""
    root = tmp_path_factory.mktemp("cli_errors")
    runs = {}
    for name, (spoil, flags, _) in BAD_DATA.items():
        data = root / name / "data"
        _bad_data(synthetic_dir, data, spoil)
        flags = [flag.format(data=data) for flag in flags]
        runs[name] = (root / name, data, root / name / "run", flags, None)
    for name, (flags, _) in BAD_WORKDIR.items():
        workdir = root / name / "run"
        copy_workdir(trained_workdir, workdir)
        runs[name] = (root / name, synthetic_dir, workdir, flags, file_digests(workdir))

    def run(name):
        config_dir, data, workdir, flags, before = runs[name]
        return name, (trainer_cli.run(config_dir, data, workdir, *flags), workdir, before)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # one run per core
        return dict(pool.map(run, runs))


def _assert_one_error_line(done, expected):
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    errors = trainer_cli.error_lines(done)
    assert len(errors) == 1 and expected in errors[0], errors


@pytest.mark.parametrize("name", sorted(BAD_DATA))
def test_bad_data(outcomes, name):
    done, workdir, _ = outcomes[name]
    _assert_one_error_line(done, BAD_DATA[name][2])
    assert not workdir.exists()


@pytest.mark.parametrize("name", sorted(BAD_WORKDIR))
def test_bad_workdir_or_checkpoint(outcomes, name):
    done, workdir, before = outcomes[name]
    _assert_one_error_line(done, BAD_WORKDIR[name][1])
    assert file_digests(workdir) == before


def test_config_typo(synthetic_dir, tmp_path):
    done = trainer_cli.run(tmp_path, synthetic_dir, tmp_path / "run", "--config.batch_sise=8")
    assert done.returncode == 2
    assert trainer_cli.error_lines(done) == [
        "error: bad config override: config has no field 'batch_sise' (did you mean 'batch_size'?)"
    ]
    assert not (tmp_path / "run").exists()


def test_workdir_in_use(synthetic_dir, tmp_path):
    with workdir_lock.hold(tmp_path / "busy") as lock:
        before = sorted(p.name for p in lock.parent.iterdir())
        done = trainer_cli.run(tmp_path, synthetic_dir, tmp_path / "busy")
        errors = trainer_cli.error_lines(done)
        assert done.returncode == 2
        assert len(errors) == 1 and f"pid {os.getpid()}" in errors[0]
        assert sorted(p.name for p in lock.parent.iterdir()) == before
