"""Evaluation over a whole data set: padded, masked batches and metrics from the confusion.

Every image counts exactly once (SPEC §5); the metrics derive from the summed confusion matrix.
"""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np


def metrics_from_confusion(confusion: np.ndarray, prob_sum: np.ndarray) -> dict[str, Any]:
    """Top-1, per-class and balanced accuracy from a (C, C) true x predicted count matrix.

    Classes without test images have no per-class accuracy (None) and are left out of the
    balanced accuracy.
    """
    confusion = np.asarray(confusion, np.int64)
    num_examples = int(confusion.sum())
    per_class_total = confusion.sum(axis=1)
    per_class_correct = np.diag(confusion)
    present = per_class_total > 0
    per_class = np.where(present, per_class_correct / np.maximum(per_class_total, 1), np.nan)
    return {
        "accuracy": float(per_class_correct.sum() / max(num_examples, 1)),
        "balanced_accuracy": float(per_class[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": [None if np.isnan(a) else float(a) for a in per_class],
        "confusion_matrix": confusion.tolist(),
        "num_examples": num_examples,
        "mean_distribution": (np.asarray(prob_sum, np.float64) / max(num_examples, 1)).tolist(),
    }


def evaluate(
    eval_step: Callable, params, batch_stats, batches: Iterable[dict[str, np.ndarray]]
) -> dict[str, Any]:
    """Runs `eval_step` over padded batches and returns `metrics_from_confusion` of the sums.

    The per-batch counts stay on the device until the end, so batches are dispatched without
    waiting for each other.
    """
    counts = [eval_step(params, batch_stats, batch) for batch in batches]
    if not counts:
        raise ValueError("evaluation got no batches")
    totals = jax.device_get(jax.tree.map(lambda *xs: sum(xs[1:], xs[0]), *counts))
    return metrics_from_confusion(totals["confusion"], totals["prob_sum"])
