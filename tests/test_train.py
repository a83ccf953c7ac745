"""End to end: train into a temp workdir, resume exactly, evaluate, refuse bad workdirs."""

import json

import jax
import numpy as np
import pytest

from ldl_jax import checkpointing, synthetic, train
from tests.conftest import make_tiny_config

NUM_TRAIN, NUM_VAL, NUM_TEST = 40, 10, 13  # 13 test images: not a multiple of any batch size


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    synthetic.make_synthetic_fer(
        out,
        seed=0,
        num_train=NUM_TRAIN,
        num_val=NUM_VAL,
        num_test=NUM_TEST,
        image_size=16,
        num_neighbors=4,
    )
    return out


def _config(data_dir, **overrides):
    fields = dict(num_train_steps=2, log_every_steps=1, val_interval=2, eval_batch_size=5)
    config = make_tiny_config(**{**fields, **overrides})
    config.data.image_dir = str(data_dir / "images")
    config.data.train_csv = str(data_dir / "train.csv")
    config.data.val_csv = str(data_dir / "val.csv")
    config.data.test_csv = str(data_dir / "test.csv")
    return config


def _latest_state(config, workdir):
    from ldl_jax import models
    from ldl_jax.train_state import create_optimizer, create_train_state

    model = models.create_model(config)
    tx = create_optimizer(config, 1)
    target = jax.eval_shape(lambda: create_train_state(config, model, tx, NUM_TRAIN))
    checkpoints = checkpointing.Checkpoints(workdir)
    state, meta = checkpoints.restore(target)
    checkpoints.close()
    return state, meta


def test_two_step_run_writes_results_and_checkpoints(data_dir, tmp_path):
    config = _config(data_dir)
    results = train.train_and_evaluate(config, tmp_path)
    saved = json.loads((tmp_path / train.EVAL_RESULTS_FILE).read_text())
    for name, size in (("val", NUM_VAL), ("test", NUM_TEST)):
        assert saved[name]["num_examples"] == size  # every image once, none padded in
        assert np.sum(saved[name]["confusion_matrix"]) == size
        assert len(saved[name]["per_class_accuracy"]) == config.num_classes
        assert 0.0 <= saved[name]["balanced_accuracy"] <= 1.0
        np.testing.assert_allclose(sum(saved[name]["mean_distribution"]), 1.0, rtol=1e-5)
    assert saved["test"]["accuracy"] == results["test"]["accuracy"]
    assert saved["val_summary"]["history"][0]["step"] == 2
    assert json.loads((tmp_path / "config.json").read_text())["model"]["backbone"] == "resnet_tiny"
    state, meta = _latest_state(config, tmp_path)
    assert int(state.step) == 2
    assert meta["best_val_accuracy"] == saved["val"]["accuracy"]
    assert checkpointing.Checkpoints(tmp_path).latest_step(checkpointing.BEST) == 2


def test_resume_matches_uninterrupted_run(data_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.train_and_evaluate(_config(data_dir, num_train_steps=4), straight)
    train.train_and_evaluate(_config(data_dir, num_train_steps=2), resumed)
    train.train_and_evaluate(_config(data_dir, num_train_steps=4), resumed)
    expected, _ = _latest_state(_config(data_dir), straight)
    got, _ = _latest_state(_config(data_dir), resumed)
    assert int(got.step) == 4
    for name, a, b in zip(
        ("state",), [jax.tree.leaves(expected)], [jax.tree.leaves(got)], strict=True
    ):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    # The run moved: theta and the centres are no longer at their initial values.
    assert np.any(np.asarray(got.theta) != 0.5)
    assert np.any(np.asarray(got.centers) != 0)


def test_eval_mode_restores_and_counts_each_image_once(data_dir, tmp_path):
    train.train_and_evaluate(_config(data_dir), tmp_path)
    trained = json.loads((tmp_path / train.EVAL_RESULTS_FILE).read_text())
    config = _config(data_dir, eval_batch_size=4)
    results = train.evaluate_checkpoint(config, tmp_path, "best")
    assert results["test"]["num_examples"] == NUM_TEST
    assert results["test"]["confusion_matrix"] == trained["test"]["confusion_matrix"]
    assert train.evaluate_checkpoint(config, tmp_path, "2")["test"]["step"] == 2
    with pytest.raises(FileNotFoundError, match="step 7"):
        train.evaluate_checkpoint(config, tmp_path, "7")


def test_checkpoint_of_another_model_is_refused_before_writing(data_dir, tmp_path):
    train.train_and_evaluate(_config(data_dir), tmp_path)
    config_before = (tmp_path / "config.json").read_text()
    other = _config(data_dir)
    other.model.backbone = "ir_tiny"
    with pytest.raises(checkpointing.CheckpointMismatchError, match="backbone"):
        train.train_and_evaluate(other, tmp_path)
    assert (tmp_path / "config.json").read_text() == config_before
    with pytest.raises(checkpointing.CheckpointMismatchError, match="backbone"):
        train.evaluate_checkpoint(other, tmp_path)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(data_dir, tmp_path):
    train.train_and_evaluate(_config(data_dir), tmp_path)
    with pytest.raises(FloatingPointError, match="step 4"):
        train.train_and_evaluate(_config(data_dir, num_train_steps=6, lr=float("nan")), tmp_path)
    assert checkpointing.Checkpoints(tmp_path).latest_step() == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_classes", 3, "class_names"),
        ("batch_size", 64, "batch_size=64 exceeds"),
        ("num_neighbors", 9, "knn"),
    ],
)
def test_config_that_does_not_fit_is_named(data_dir, tmp_path, field, value, message):
    config = _config(data_dir)
    config[field] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
