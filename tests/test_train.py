"""End to end: train into a temp workdir, resume exactly, evaluate, refuse bad workdirs."""

import json

import jax
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from ldl_jax import checkpointing, data, inference, ldl_measures, train
from tests.helpers.tiny import NUM_TEST, NUM_VAL, make_data_config
from tests.helpers.workdirs import latest_state


def test_two_step_run_writes_results_and_checkpoints(synthetic_dir, tmp_path):
    config = make_data_config(synthetic_dir)
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
    state, meta = latest_state(config, tmp_path)
    assert int(state.step) == 2
    assert meta["best_val_accuracy"] == saved["val"]["accuracy"]
    assert checkpointing.Checkpoints(tmp_path).latest_step(checkpointing.BEST) == 2


@pytest.mark.slow
@pytest.mark.parametrize("placement", ["host", "device"])
def test_resume_matches_uninterrupted_run(synthetic_dir, tmp_path, placement):
    def config(steps):
        config = make_data_config(synthetic_dir, num_train_steps=steps)
        config.data.placement = placement
        return config

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.train_and_evaluate(config(4), straight)
    train.train_and_evaluate(config(2), resumed)
    train.train_and_evaluate(config(4), resumed)
    expected, _ = latest_state(make_data_config(synthetic_dir), straight)
    got, _ = latest_state(make_data_config(synthetic_dir), resumed)
    assert int(got.step) == 4
    for name, a, b in zip(
        ("state",), [jax.tree.leaves(expected)], [jax.tree.leaves(got)], strict=True
    ):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=name)
    # The run moved: theta and the centres are no longer at their initial values.
    assert np.any(np.asarray(got.theta) != 0.5)
    assert np.any(np.asarray(got.centers) != 0)


def test_clean_labels_in_expression_backup_never_reach_training(synthetic_dir, tmp_path):
    """Two runs whose training CSVs differ only in `expression_backup` (the clean labels a
    noise study keeps) end bit-identical: the column is for reports, never for training."""
    frame = pd.read_csv(synthetic_dir / "train.csv")
    labels = frame["expression"].to_numpy()
    states = []
    for name, backup in (("same", labels), ("shifted", (labels + 3) % 7)):
        csv = tmp_path / f"train_{name}.csv"
        frame.assign(expression_backup=backup).to_csv(csv, index=False)
        config = make_data_config(synthetic_dir, num_train_steps=3)
        config.data.train_csv = str(csv)
        train.train_and_evaluate(config, tmp_path / name)
        states.append(latest_state(config, tmp_path / name)[0])
    for x, y in zip(*(jax.tree.leaves(state) for state in states), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert np.any(np.asarray(states[0].theta) != states[0].theta[0])  # lambda did move


@pytest.mark.slow
def test_memory_bank_run_is_filled_fed_without_neighbour_images_and_resumes_exactly(
    synthetic_dir, tmp_path
):
    def bank_config(**overrides):
        return make_data_config(synthetic_dir, neighbors="memory_bank", **overrides)

    first_batch = next(data.open_train_data(bank_config()).decode(eval_sets=False).train_batches())
    assert "neighbor_image" not in first_batch and "neighbor_index" in first_batch
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.train_and_evaluate(bank_config(num_train_steps=4), straight)
    train.train_and_evaluate(bank_config(num_train_steps=2), resumed)
    train.train_and_evaluate(bank_config(num_train_steps=4), resumed)
    expected, _ = latest_state(bank_config(), straight)
    got, _ = latest_state(bank_config(), resumed)
    assert int(got.step) == 4
    for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(got), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # 4 steps of 4 rows wrote at most 16 of the 40 rows: the first pass filled the others.
    np.testing.assert_allclose(np.asarray(got.bank.probs).sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.abs(np.asarray(got.bank.features)).sum(-1) > 0)
    with pytest.raises(checkpointing.CheckpointMismatchError, match="neighbors"):
        train.train_and_evaluate(make_data_config(synthetic_dir), resumed)
    # Its backbone still starts other runs (config.model.pretrained = a workdir).
    assert inference.read_workdir_backbone(resumed)[0] == "resnet_tiny"


@pytest.mark.usefixtures("trained_copy")
def test_eval_mode_restores_and_counts_each_image_once(synthetic_dir, tmp_path):
    trained = json.loads((tmp_path / train.EVAL_RESULTS_FILE).read_text())
    config = make_data_config(synthetic_dir, eval_batch_size=3)
    results = train.evaluate_checkpoint(config, tmp_path, "best")
    assert results["test"]["num_examples"] == NUM_TEST
    assert results["test"]["confusion_matrix"] == trained["test"]["confusion_matrix"]
    assert train.evaluate_checkpoint(config, tmp_path, "2")["test"]["step"] == 2
    with pytest.raises(FileNotFoundError, match="step 7"):
        train.evaluate_checkpoint(config, tmp_path, "7")


@pytest.mark.usefixtures("trained_copy")
def test_eval_reports_the_ldl_measures_against_the_crowd_distributions(synthetic_dir, tmp_path):
    """The measures in eval_results.json and TensorBoard are those of the test CSV's crowd
    distributions against what the restored model predicts for each image."""
    config = make_data_config(synthetic_dir)
    results = train.evaluate_checkpoint(config, tmp_path, "latest")
    out = tmp_path / "eval" / "latest-2"
    saved = json.loads((out / train.EVAL_RESULTS_FILE).read_text())
    test_set = data.read_eval_sets(config)["test"].decode(config.input_size)
    predicted = inference.load(tmp_path, "latest").probabilities(test_set.images)
    expected = ldl_measures.mean_measures(test_set.table.distributions, predicted)
    assert list(saved["test"]["ldl_measures"]) == list(ldl_measures.MEASURES)
    for name, value in expected.items():
        assert saved["test"]["ldl_measures"][name] == pytest.approx(value, rel=1e-4, abs=1e-6)
    assert results["val"]["ldl_measures"].keys() == expected.keys()
    tags = {
        value.tag
        for events in out.glob("events.out.tfevents*")
        for event in tf.compat.v1.train.summary_iterator(str(events))
        for value in event.summary.value
    }
    assert {f"test/ldl/{name}" for name in expected} <= tags


@pytest.mark.usefixtures("trained_copy")
def test_checkpoint_of_another_model_is_refused_before_writing(synthetic_dir, tmp_path):
    config_before = (tmp_path / "config.json").read_text()
    other = make_data_config(synthetic_dir)
    other.model.backbone = "ir_tiny"
    with pytest.raises(checkpointing.CheckpointMismatchError, match="backbone"):
        train.train_and_evaluate(other, tmp_path)
    assert (tmp_path / "config.json").read_text() == config_before
    with pytest.raises(checkpointing.CheckpointMismatchError, match="backbone"):
        train.evaluate_checkpoint(other, tmp_path)


@pytest.mark.usefixtures("trained_copy")
def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(synthetic_dir, tmp_path):
    with pytest.raises(FloatingPointError, match="step 4"):
        train.train_and_evaluate(
            make_data_config(synthetic_dir, num_train_steps=6, lr=float("nan")), tmp_path
        )
    assert checkpointing.Checkpoints(tmp_path).latest_step() == 2


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_classes", 3, "class_names"),
        ("batch_size", 64, "batch_size=64 exceeds"),
        ("num_neighbors", 9, "knn"),
    ],
)
def test_config_that_does_not_fit_is_named(synthetic_dir, tmp_path, field, value, message):
    config = make_data_config(synthetic_dir)
    config[field] = value
    with pytest.raises(ValueError, match=message):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
