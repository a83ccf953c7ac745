"""Evaluation over a whole data set: padded, masked batches and metrics from the confusion.

Every image counts exactly once (docs/METHOD.md §5); the metrics derive from the summed
confusion matrix. A set with crowd label distributions (a `distribution` column) also gets the
six LDL measures between them and the predicted distributions (`ldl_jax.ldl_measures`).
"""

from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from ldl_jax import inference, ldl_measures


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


def compile_probabilities(model) -> Callable:
    """`probabilities(variables, uint8 images) -> (n, C)` softmax of the eval-mode logits, the
    distributions the eval step's `prob_sum` adds up, one per image; compiled once."""

    def probabilities(variables, images):
        _, logits = model.apply(variables, images, method="classify")
        return jax.nn.softmax(logits)

    return jax.jit(probabilities)


def distribution_measures(
    probabilities: Callable, variables, images: np.ndarray, crowd: np.ndarray, batch_size: int
) -> dict[str, float]:
    """The mean of each LDL measure between the (N, C) `crowd` distributions and the model's
    predictions for the N `images` (a second pass over the set, in padded batches)."""
    predicted = inference.predict_in_batches(probabilities, variables, images, batch_size)
    return ldl_measures.mean_measures(crowd, predicted)


def plot_confusion(confusion, class_names, title: str, path) -> None:
    """Saves the confusion matrix as a PNG: rows true, columns predicted, cells row-normalised
    (recall) and annotated with their counts."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    confusion = np.asarray(confusion)
    recall = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.7 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(recall, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=45, ha="right")
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for true in ticks:
        for predicted in ticks:
            color = "white" if recall[true, predicted] > 0.5 else "black"
            axes.text(
                predicted,
                true,
                str(confusion[true, predicted]),
                ha="center",
                va="center",
                color=color,
                fontsize=8,
            )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
