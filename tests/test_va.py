"""Valence/arousal regression: the step math, the loop, annotate_va, and LDLVA on its output."""

import importlib
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from ldl_jax import (
    annotate_va,
    checkpointing,
    config_checks,
    config_fields,
    inference,
    train,
    train_state,
    va_knn,
    va_model,
)
from ldl_jax.data import images as image_lib
from ldl_jax.data import streams, tables
from ldl_jax.train_state import create_optimizer
from tests.helpers.tiny import NUM_TEST, NUM_TRAIN, NUM_VAL, make_data_config, make_tiny_config


def make_va_config(data_dir, **overrides):
    """The tiny data config as a VA regressor, 2 steps."""
    config = make_data_config(data_dir, **overrides)
    config.task = "va"
    return config


def _numpy_ccc(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cov = np.mean((x - x.mean()) * (y - y.mean()))
    return 2 * cov / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)


# ------------------------------------------------------------------------------ step math


def test_ccc_of_identical_vectors_is_one_and_of_negated_is_minus_one():
    values = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (50, 2)), jnp.float32)
    np.testing.assert_allclose(va_model.ccc(values, values), [1.0, 1.0], rtol=1e-5)
    centred = values - values.mean(axis=0)
    np.testing.assert_allclose(va_model.ccc(centred, -centred), [-1.0, -1.0], rtol=1e-5)
    np.testing.assert_allclose(va_model.va_loss(values, values, "ccc"), 0.0, atol=1e-5)


def test_ccc_penalises_a_shift_that_pearson_ignores():
    values = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (50, 2)), jnp.float32)
    shifted = va_model.ccc(values + 0.5, values)
    assert np.all(np.asarray(shifted) < 0.9)


def test_batch_metrics_and_set_metrics_match_numpy():
    rng = np.random.default_rng(2)
    target = rng.uniform(-1, 1, (37, 2)).astype(np.float32)
    predicted = np.clip(target + rng.normal(0, 0.3, target.shape), -1, 1).astype(np.float32)
    got = va_model.batch_metrics(jnp.float32(0.0), jnp.asarray(predicted), jnp.asarray(target))
    on_host = va_model.va_metrics(predicted, target)
    for i, name in enumerate(va_model.DIMENSIONS):
        rmse = np.sqrt(np.mean((predicted[:, i].astype(np.float64) - target[:, i]) ** 2))
        ccc = _numpy_ccc(predicted[:, i], target[:, i])
        np.testing.assert_allclose(got[f"rmse_{name}"], rmse, rtol=1e-5)
        np.testing.assert_allclose(got[f"ccc_{name}"], ccc, rtol=1e-5)
        np.testing.assert_allclose(on_host[f"rmse_{name}"], rmse, rtol=1e-12)
        np.testing.assert_allclose(on_host[f"ccc_{name}"], ccc, rtol=1e-7)
    assert on_host["num_examples"] == 37
    np.testing.assert_allclose(
        on_host["ccc"], np.mean([on_host["ccc_valence"], on_host["ccc_arousal"]])
    )
    np.testing.assert_allclose(
        va_model.va_loss(jnp.asarray(predicted), jnp.asarray(target), "mse"),
        np.mean((predicted.astype(np.float64) - target) ** 2),
        rtol=1e-5,
    )


@pytest.mark.parametrize("loss", config_fields.VA_LOSSES)
def test_train_step_lowers_the_loss_on_a_fixed_batch(loss):
    config = make_tiny_config(lr=3e-3)
    model = va_model.create_va_model(config)
    tx = create_optimizer(config, steps_per_epoch=100)
    state = train_state.create_va_state(config, model, tx)
    rng = np.random.default_rng(3)
    batch = {
        "image": rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
        "va": rng.uniform(-0.8, 0.8, (8, 2)).astype(np.float32),
    }
    step = jax.jit(va_model.make_va_train_step(model, tx, loss))
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 15
    assert losses[-1] < 0.5 * losses[0], losses
    assert set(metrics) == set(va_model.TRAIN_METRICS)


def test_unknown_loss_is_named():
    config = make_tiny_config()
    with pytest.raises(ValueError, match="va_loss='l1'"):
        va_model.make_va_train_step(va_model.create_va_model(config), None, "l1")


def test_model_module_runs_without_tensorflow():
    code = "import sys, ldl_jax.va_model; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[1])


# ------------------------------------------------------------------------------ batches


def _tables_and_images(synthetic_dir):
    csv, image_dir = synthetic_dir / "train.csv", synthetic_dir / "images"
    ldl_table = tables.read_train_table(csv, image_dir, num_classes=7, num_neighbors=3)
    table = tables.read_va_table(csv, image_dir)
    return ldl_table, table, image_lib.load_images(table.paths, 16)


def test_va_batches_are_the_ldl_central_images_and_their_va(synthetic_dir):
    ldl_table, table, images = _tables_and_images(synthetic_dir)
    kwargs = dict(batch_size=4, seed=3, pad_size=2, start_step=11)
    ldl_batch = next(streams.train_batches(ldl_table, images, **kwargs))
    batch = next(streams.va_train_batches(table, images, **kwargs))
    np.testing.assert_array_equal(batch["image"], ldl_batch["image"])
    np.testing.assert_array_equal(batch["va"], ldl_table.va[ldl_batch["index"]])
    assert not np.array_equal(batch["image"], images[ldl_batch["index"]])  # augmented


def test_process_slices_of_va_batches_make_the_global_batch(synthetic_dir):
    _, table, images = _tables_and_images(synthetic_dir)
    kwargs = dict(batch_size=4, seed=0, pad_size=2, start_step=5)
    whole = next(streams.va_train_batches(table, images, **kwargs))
    parts = [
        next(streams.va_train_batches(table, images, process_index=i, process_count=2, **kwargs))
        for i in range(2)
    ]
    for key in ("image", "va"):
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


# ------------------------------------------------------------------------------ the loop

TRAINED_STEPS = 3


@pytest.fixture(scope="module")
def va_workdir(synthetic_dir, tmp_path_factory):
    """A VA regressor trained 3 steps on the tiny synthetic set (val at steps 2 and 3)."""
    workdir = tmp_path_factory.mktemp("va_run")
    config = make_va_config(synthetic_dir, num_train_steps=TRAINED_STEPS)
    train.train_and_evaluate(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def ldl_on_annotated(synthetic_dir, va_workdir, tmp_path_factory):
    """The training CSV stripped of valence, arousal and knn, annotated, then LDLVA on it."""
    tmp = tmp_path_factory.mktemp("annotated")
    bare = tmp / "bare.csv"
    pd.read_csv(synthetic_dir / "train.csv").drop(columns=["valence", "arousal", "knn"]).to_csv(
        bare, index=False
    )
    out = tmp / "annotated.csv"
    summary = annotate_va.annotate(
        va_workdir, bare, synthetic_dir / "images", out, num_neighbors=5, batch_size=16
    )
    config = make_data_config(synthetic_dir, num_train_steps=2)
    config.data.train_csv = str(out)
    results = train.train_and_evaluate(config, tmp / "ldl")
    return {"csv": out, "summary": summary, "workdir": tmp / "ldl", "results": results}


def _variables_and_step(workdir):
    restored = inference.restore_regressor(workdir)
    return restored.variables, restored.step


def test_va_run_writes_metrics_checkpoints_and_resumes_exactly(synthetic_dir, va_workdir, tmp_path):
    train.train_and_evaluate(make_va_config(synthetic_dir, num_train_steps=2), tmp_path)
    train.train_and_evaluate(make_va_config(synthetic_dir, num_train_steps=TRAINED_STEPS), tmp_path)

    saved = json.loads((va_workdir / train.EVAL_RESULTS_FILE).read_text())
    for name, size in (("val", NUM_VAL), ("test", NUM_TEST)):
        assert saved[name]["num_examples"] == size  # every image once, none padded in
        for key in ("rmse_valence", "rmse_arousal", "ccc_valence", "ccc_arousal"):
            assert np.isfinite(saved[name][key])
        assert saved[name]["step"] == TRAINED_STEPS
    assert [entry["step"] for entry in saved["val_summary"]["history"]] == [2, 3]
    assert json.loads((va_workdir / "config.json").read_text())["task"] == "va"

    expected, step = _variables_and_step(va_workdir)
    got, resumed_step = _variables_and_step(tmp_path)
    assert step == resumed_step == TRAINED_STEPS
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    resumed_results = json.loads((tmp_path / train.EVAL_RESULTS_FILE).read_text())
    assert resumed_results["test"] == saved["test"]


def test_va_eval_mode_reproduces_the_final_test_metrics(synthetic_dir, va_workdir):
    trained = json.loads((va_workdir / train.EVAL_RESULTS_FILE).read_text())
    config = make_va_config(synthetic_dir, eval_batch_size=3)
    results = train.evaluate_checkpoint(config, va_workdir, "latest")
    assert results["test"]["num_examples"] == NUM_TEST
    for key in ("rmse_valence", "ccc_arousal"):
        np.testing.assert_allclose(results["test"][key], trained["test"][key], rtol=1e-5)
    written = va_workdir / "eval" / f"latest-{TRAINED_STEPS}" / train.EVAL_RESULTS_FILE
    assert json.loads(written.read_text())["test"]["ccc_arousal"] == results["test"]["ccc_arousal"]


def test_ldl_and_va_workdirs_refuse_each_other(synthetic_dir, va_workdir, ldl_on_annotated):
    with pytest.raises(checkpointing.CheckpointMismatchError, match="another model"):
        train.train_and_evaluate(make_data_config(synthetic_dir), va_workdir)
    with pytest.raises(checkpointing.CheckpointMismatchError, match="task"):
        train.train_and_evaluate(make_va_config(synthetic_dir), ldl_on_annotated["workdir"])
    out = ldl_on_annotated["csv"].with_name("refused.csv")
    with pytest.raises(ValueError, match="not a valence/arousal regressor"):
        annotate_va.annotate(
            ldl_on_annotated["workdir"], synthetic_dir / "train.csv", synthetic_dir / "images", out
        )
    assert not out.exists()


def test_va_outside_the_tanh_range_is_named(synthetic_dir, tmp_path):
    frame = pd.read_csv(synthetic_dir / "train.csv")
    frame.loc[5, "arousal"] = -2
    bad = tmp_path / "train.csv"
    frame.to_csv(bad, index=False)
    config = make_va_config(synthetic_dir)
    config.data.train_csv = str(bad)
    with pytest.raises(tables.DataError, match=r"line 7 \(row index 5\).*'arousal'.*-2"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "field, value, message", [("va_loss", "l1", "va_loss"), ("parallel", "pmap", "mesh")]
)
def test_bad_va_config_is_named(synthetic_dir, tmp_path, field, value, message):
    config = make_va_config(synthetic_dir)
    config[field] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, tmp_path / "run")


@pytest.mark.parametrize("name", ["synthetic_va", "resnet18_affectnet_va"])
def test_va_configs_are_consistent(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    config_checks.validate_config(config)
    assert config.task == "va"


def test_default_task_is_ldl():
    assert make_tiny_config().task == "ldl"


# ------------------------------------------------------------------------------ annotate_va


def test_annotated_csv_holds_the_regressor_predictions_and_their_knn(
    synthetic_dir, va_workdir, ldl_on_annotated
):
    original = pd.read_csv(synthetic_dir / "train.csv")
    assert ldl_on_annotated["summary"]["rows"] == NUM_TRAIN
    assert ldl_on_annotated["summary"]["step"] == TRAINED_STEPS
    annotated = pd.read_csv(ldl_on_annotated["csv"])
    assert list(annotated.columns[:2]) == ["subDirectory_filePath", "expression"]
    pd.testing.assert_series_equal(annotated["expression"], original["expression"])
    va = annotated[["valence", "arousal"]].to_numpy()
    assert np.all(np.abs(va) < 1)

    # Row by row the regressor's predictions (one compiled function, padded batches) ...
    restored = inference.restore_regressor(va_workdir)
    config, model, variables = restored.config, restored.model, restored.variables
    images = image_lib.load_images(
        [str(synthetic_dir / "images" / p) for p in original["subDirectory_filePath"]],
        config.input_size,
    )
    direct = va_model.make_va_predict(model)(variables, images)
    np.testing.assert_allclose(va, np.asarray(direct), atol=2e-6)
    # ... and the knn column is va_knn's on them.
    expected_knn = va_knn.format_knn_column(va_knn.knn_in_va_space(va, 5))
    assert annotated["knn"].tolist() == expected_knn


def test_ldlva_trains_on_the_annotated_csv(ldl_on_annotated):
    results = ldl_on_annotated["results"]
    assert results["test"]["num_examples"] == NUM_TEST
    state_steps = checkpointing.Checkpoints(ldl_on_annotated["workdir"]).latest_step()
    assert state_steps == 2


def test_annotate_can_replace_its_input(synthetic_dir, va_workdir, tmp_path):
    csv = tmp_path / "train.csv"
    pd.read_csv(synthetic_dir / "train.csv").drop(columns=["knn"]).to_csv(csv, index=False)
    annotate_va.annotate(va_workdir, csv, synthetic_dir / "images", csv, num_neighbors=4)
    assert pd.read_csv(csv)["knn"].str.count(";").eq(3).all()
    assert [p.name for p in tmp_path.iterdir()] == ["train.csv"]  # no temporary left


def test_annotate_names_missing_images_and_bad_arguments(synthetic_dir, va_workdir, tmp_path):
    frame = pd.read_csv(synthetic_dir / "train.csv")
    frame.loc[3, "subDirectory_filePath"] = "train/absent.png"
    csv = tmp_path / "in.csv"
    frame.to_csv(csv, index=False)
    out = tmp_path / "out.csv"
    images = synthetic_dir / "images"
    with pytest.raises(tables.DataError, match=r"line 5 \(row index 3\) 'train/absent"):
        annotate_va.annotate(va_workdir, csv, images, out)
    with pytest.raises(ValueError, match=f"num_neighbors={NUM_TRAIN}"):
        annotate_va.annotate(
            va_workdir, synthetic_dir / "train.csv", images, out, num_neighbors=NUM_TRAIN
        )
    with pytest.raises(FileNotFoundError, match="step 99"):
        annotate_va.annotate(va_workdir, synthetic_dir / "train.csv", images, out, checkpoint="99")
    with pytest.raises(FileNotFoundError, match="config.json"):
        annotate_va.annotate(tmp_path / "nowhere", synthetic_dir / "train.csv", images, out)
    frame.drop(columns=["subDirectory_filePath"]).to_csv(csv, index=False)
    with pytest.raises(tables.DataError, match="subDirectory_filePath"):
        annotate_va.annotate(va_workdir, csv, images, out)
    assert not out.exists()


@pytest.mark.slow
def test_noise_study_takes_its_va_neighbours_from_a_regressor(va_workdir, tmp_path):
    """--va_regressor: the study's training rows get the regressor's VA and knn (annotate_va),
    its noisy copies keep them, and a later call without the flag is refused."""
    from tests.tools.test_noise_study import TINY
    from tools import noise_study

    out = tmp_path / "study"
    args = TINY + [
        f"--out={out}",
        "--methods=ldlva",
        "--noise=0.3",
        "--pretrain_epochs=0",
        f"--va_regressor={va_workdir}",
        f"--results={tmp_path / 'RESULTS.md'}",
        f"--plot={tmp_path / 'study.png'}",
    ]
    noise_study.main(args)

    clean = out / "data" / "clean"
    expected = tmp_path / "expected.csv"
    annotate_va.annotate(va_workdir, clean / "train.csv", clean / "images", expected)
    annotated = pd.read_csv(clean / noise_study.REGRESSOR_TRAIN_CSV)
    pd.testing.assert_frame_equal(annotated, pd.read_csv(expected))
    assert not annotated["knn"].equals(pd.read_csv(clean / "train.csv")["knn"])
    config = json.loads((out / "runs" / "ldlva_proportional30_s0" / "config.json").read_text())
    noisy = pd.read_csv(config["data"]["train_csv"])
    kept = annotated.set_index("subDirectory_filePath").loc[noisy["subDirectory_filePath"]]
    for column in ("valence", "arousal"):  # the regressor's VA on the rows left for training
        np.testing.assert_array_equal(noisy[column], kept[column])
    np.testing.assert_array_equal(noisy["expression_backup"], kept["expression"])
    # Their neighbours are rebuilt among them from those values.
    knn = va_knn.knn_in_va_space(noisy[["valence", "arousal"]].to_numpy(), 20)
    assert noisy["knn"].tolist() == va_knn.format_knn_column(knn)
    assert "from the predictions of the VA regressor" in " ".join(
        (tmp_path / "RESULTS.md").read_text().split()
    )

    without = [arg for arg in args if not arg.startswith("--va_regressor")]
    with pytest.raises(SystemExit, match="--va_regressor was"):
        noise_study.main(without)


def test_synthetic_va_config_takes_another_data_seed():
    module = importlib.import_module("configs.synthetic_va")
    assert module.get_config().data.train_csv == "data/synthetic_va/train.csv"
    config = module.get_config("5")  # --config=configs/synthetic_va.py:5
    assert config.data.synthetic.seed == 5
    assert config.data.synthetic.dir == "data/synthetic_va_seed5"
    assert config.data.train_csv == "data/synthetic_va_seed5/train.csv"
