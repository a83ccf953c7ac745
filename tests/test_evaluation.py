"""Evaluation reports: exact metrics of fixed logits, and `--mode=eval` on every named set."""

import json

import numpy as np
import pytest

from ldl_jax import evaluation, steps, train
from ldl_jax.data import batches as batch_lib
from tests.helpers.tiny import make_data_config


class FixedLogitsModel:
    """Stands in for the network: the logits of image i are row i of a table, where i is
    written into the image's first pixel."""

    dtype = np.float32

    def __init__(self, logits):
        self.logits = np.asarray(logits, np.float32)

    def apply(self, variables, images, train):
        del variables, train
        ids = np.rint(np.asarray(images)[:, 0, 0, 0] * 127.5 + 127.5).astype(int)
        return None, self.logits[ids]


def test_eval_metrics_of_fixed_logits_are_exact():
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0, 2])  # 5 of 7 right
    logits = np.full((7, 4), -5.0)
    logits[np.arange(7), predicted] = 5.0
    images = np.zeros((7, 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(7)
    eval_step = steps.make_eval_step(FixedLogitsModel(logits), num_classes=4)
    batches = batch_lib.eval_batches(images, labels, batch_size=3)  # 3 + 3 + 1 padded
    metrics = evaluation.evaluate(eval_step, None, None, batches)

    assert metrics["num_examples"] == 7
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["per_class_accuracy"] == pytest.approx([2 / 3, 1.0, 0.5, None], nan_ok=True)
    assert metrics["per_class_accuracy"][3] is None  # class 3 has no test image
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert metrics["confusion_matrix"] == [
        [2, 1, 0, 0],
        [0, 2, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],
    ]
    softmax_peak = np.exp(5) / (np.exp(5) + 3 * np.exp(-5))
    expected_mean = np.bincount(predicted, minlength=4) / 7 * softmax_peak
    expected_mean += (1 - np.bincount(predicted, minlength=4) / 7) * (1 - softmax_peak) / 3
    np.testing.assert_allclose(metrics["mean_distribution"], expected_mean, rtol=1e-5)


def test_eval_mode_reports_every_named_set(synthetic_dir, trained_workdir):
    config = make_data_config(synthetic_dir)
    config.eval_sets = {
        "occluded": {"csv": str(synthetic_dir / "val.csv"), "image_dir": config.data.image_dir}
    }
    results = train.evaluate_checkpoint(config, trained_workdir, "latest")
    assert set(results) == {"val", "test", "occluded"}
    # The same images under another name give the same numbers.
    assert results["occluded"]["confusion_matrix"] == results["val"]["confusion_matrix"]
    out = trained_workdir / "eval" / "latest-2"
    saved = json.loads((out / train.EVAL_RESULTS_FILE).read_text())
    assert saved["occluded"]["num_examples"] == results["occluded"]["num_examples"]
    for name in results:
        png = (out / f"confusion_{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
        assert len(png) > 5000  # a drawn matrix with labels, not an empty canvas
