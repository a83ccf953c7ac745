"""The lambda inspection: its detection figures, and its outputs from a real (tiny) run."""

import itertools
import json
import types

import jax
import numpy as np
import pandas as pd
import pytest

from ldl_jax import inference, models
from ldl_jax import inspect as lambda_inspect
from tests.helpers.tiny import make_tiny_config
from tests.helpers.workdirs import copy_workdir


def test_precision_at_k_by_hand():
    # 3 flipped rows (1, 3, 4); the 3 lowest lambdas are rows 3, 0, 4 -> 2 of 3 flipped.
    lam = np.array([0.2, 0.9, 0.8, 0.1, 0.3, 0.7])
    flipped = np.array([False, True, False, True, True, False])
    assert lambda_inspect.precision_at_k(lam, flipped) == pytest.approx(2 / 3)
    # Ties are broken by row index: rows 0 and 1 tie, k = 1 picks row 0.
    assert lambda_inspect.precision_at_k(np.array([0.5, 0.5, 0.9]), np.array([0, 1, 0])) == 0.0
    with pytest.raises(ValueError, match="flipped"):
        lambda_inspect.precision_at_k(lam, np.zeros(6, bool))


def test_auroc_matches_pair_counting():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    positives = rng.random(40) < 0.3
    pairs = list(itertools.product(scores[positives], scores[~positives]))
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert lambda_inspect.auroc(scores, positives) == pytest.approx(expected)
    assert lambda_inspect.auroc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0


def test_inspect_writes_ranking_plots_and_detection(synthetic_dir, noisy_run, tmp_path):
    frame = pd.read_csv(synthetic_dir / "train.csv")
    noisy = frame["expression"].to_numpy().copy()
    noisy[:6] = (noisy[:6] + 1) % 7
    workdir = copy_workdir(noisy_run[0], tmp_path / "run")

    summary = lambda_inspect.inspect_run(workdir, grid=4, batch_size=8)
    out = workdir / "inspect" / "latest-4"
    ranking = pd.read_csv(out / "lambda_ranking.csv")
    _, lam, _ = lambda_inspect.read_lambdas(workdir)
    assert len(ranking) == len(frame)
    assert np.all(np.diff(ranking["lambda"].to_numpy()) >= 0)
    np.testing.assert_allclose(ranking["lambda"].to_numpy(), np.sort(lam), rtol=1e-6)
    assert ranking["flipped"].sum() == 6
    assert set(ranking.columns) >= {"row", "subDirectory_filePath", "given", "predicted", "clean"}
    # precision@k from the ranking itself: the share of flipped rows among its first k = 6,
    # which are the rows with the lowest lambda (checked above).
    lowest_six = np.argsort(lam, kind="stable")[:6]
    assert ranking["row"].head(6).tolist() == lowest_six.tolist()
    flipped = noisy != frame["expression"].to_numpy()
    assert summary["precision_at_k"] == pytest.approx(flipped[lowest_six].sum() / 6)
    assert json.loads((out / "summary.json").read_text())["num_flipped"] == 6
    for png in ("lambda_histogram.png", "lowest_lambda.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("neighbor_distribution", ["label", "prediction"])
def test_grid_targets_build_q_as_the_run_did(neighbor_distribution):
    """Rows 0 and 1 (lambda 0) have neighbours 2-4, all labelled Disgust with lambda 1: their
    target is Disgust exactly when the neighbours bring their labels, else the neighbours'
    (random) predictions."""
    config = make_tiny_config(neighbor_distribution=neighbor_distribution)
    model = models.create_model(config)
    variables = models.init_variables(
        model, jax.random.PRNGKey(0), config.input_size, config.num_neighbors
    )
    restored = inference.Restored(config, model, dict(variables), "latest", 0)
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 5, 5, 5, 2])
    table = types.SimpleNamespace(
        labels=labels,
        knn=np.array([[2, 3, 4]] * 6),
        va_weights=rng.uniform(0.1, 1.0, (6, 3)).astype(np.float32),
    )
    lam = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 0.5], np.float32)
    features = rng.normal(size=(6, 16)).astype(np.float32)
    probs = np.asarray(jax.nn.softmax(rng.normal(size=(6, 7)) * 3.0), np.float32)
    targets = lambda_inspect._target_distributions(
        restored, np.array([0, 1]), lam, table, features, probs
    )
    disgust = np.eye(7, dtype=np.float32)[[5, 5]]
    if neighbor_distribution == "label":
        np.testing.assert_allclose(targets, disgust, atol=1e-6)
    else:
        assert np.abs(targets - disgust).max() > 0.1
        spread = probs[2:5]  # each target is a weighted mean of the neighbours' predictions
        assert np.all(targets >= spread.min(axis=0) - 1e-6)
        assert np.all(targets <= spread.max(axis=0) + 1e-6)
