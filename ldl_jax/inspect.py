"""Finds likely mislabelled training images from what a run learned: its per-row lambda.

  python -m ldl_jax.inspect --workdir=runs/raf [--checkpoint=latest] [--out=DIR] [--grid=36]
      [--html [--html_rows=2000]]

lambda_i = sigmoid(theta_i) is how much a training row still trusts its own label
(docs/METHOD.md §3): rows whose VA neighbours explain them better than their label end low.
Writes into `--out` (default WORKDIR/inspect/CHECKPOINT-STEP):

- `lambda_ranking.csv`: every training row, lowest lambda first: row, path, given label,
  predicted label, lambda (and the clean label and whether it was flipped, when the training
  CSV has `expression_backup`, as `tools/make_noisy_labels.py` writes it);
- `lambda_histogram.png`: the distribution of lambda (flipped and clean rows apart when known);
- `lowest_lambda.png`: the lowest-lambda images with their given and predicted labels and the
  label distribution the model would train them towards;
- `summary.json`: counts and, with `expression_backup`, precision@k (k = the number of flipped
  rows) and the AUROC of 1 - lambda as a detector of flipped rows;
- with `--html`, `review.html`: the `--html_rows` lowest-lambda rows on one self-contained page
  to keep, relabel or drop each (`ldl_jax/review_page.py`; `tools/apply_review.py` applies the
  decisions it exports).
"""

import json
import os
import pathlib

import jax
import numpy as np
import pandas as pd
from absl import app, flags

from ldl_jax import console

# TensorFlow (the image decoder) prints banners as it loads: they go to the held log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
with console.native_load_held():
    from ldl_jax import inference, ldl, models, review_page
    from ldl_jax.data import tables

FLAGS = flags.FLAGS
CLEAN_LABEL_COLUMN = "expression_backup"


def define_flags():
    """Command-line flags, defined only when run as a program (modules import cleanly)."""
    flags.DEFINE_string("workdir", None, "The training run's workdir.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
    flags.DEFINE_string("out", None, "Output folder (default WORKDIR/inspect/CHECKPOINT-STEP).")
    flags.DEFINE_integer("grid", 36, "Lowest-lambda images shown in lowest_lambda.png.")
    flags.DEFINE_integer("batch_size", 64, "Images per compiled call.")
    flags.DEFINE_bool("html", False, "Also write review.html, the review page.")
    flags.DEFINE_integer("html_rows", 2000, "Lowest-lambda rows on the review page (0: all).")


def precision_at_k(lam: np.ndarray, flipped: np.ndarray) -> float:
    """Share of flipped rows among the k lowest-lambda rows, k = the number of flipped rows.

    Ties in lambda are broken by row index, so the figure never depends on sort instability.
    """
    flipped = np.asarray(flipped, bool)
    k = int(flipped.sum())
    if k == 0:
        raise ValueError("precision@k needs at least one flipped row")
    lowest = np.argsort(np.asarray(lam), kind="stable")[:k]
    return float(flipped[lowest].mean())


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for `positives` (ties count one half)."""
    positives = np.asarray(positives, bool)
    num_pos, num_neg = int(positives.sum()), int((~positives).sum())
    if num_pos == 0 or num_neg == 0:
        raise ValueError("AUROC needs both positive and negative rows")
    ranks = pd.Series(np.asarray(scores, np.float64)).rank(method="average").to_numpy()
    return float((ranks[positives].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def noise_detection(lam: np.ndarray, given: np.ndarray, clean: np.ndarray) -> dict:
    """precision@k and AUROC of lambda as a detector of the rows whose label was flipped."""
    flipped = np.asarray(given) != np.asarray(clean)
    return {
        "num_flipped": int(flipped.sum()),
        "precision_at_k": precision_at_k(lam, flipped),
        "auroc": auroc(1.0 - np.asarray(lam), flipped),
        "mean_lambda_flipped": float(np.mean(lam[flipped])),
        "mean_lambda_clean": float(np.mean(lam[~flipped])),
    }


def read_lambdas(workdir, checkpoint: str = "latest"):
    """(config, lambda (N,), step) of a run's checkpoint; nothing else of the state is read."""
    restored = inference.restore_variables(workdir, checkpoint=checkpoint, fields=("theta",))
    return restored.config, np.asarray(jax.nn.sigmoid(restored.fields["theta"])), restored.step


def _features_and_probs(restored: inference.Restored, images, batch_size):
    """Eval-mode features and class distributions of every training image."""

    def features_and_probs(variables, batch):
        features, logits = restored.model.apply(variables, batch, method=models.LDLVA.classify)
        return features, jax.nn.softmax(logits)

    return inference.predict_in_batches(
        jax.jit(features_and_probs), restored.variables, images, batch_size
    )


def _target_distributions(restored, rows, lam, table, features, probs):
    """The label distributions y = lambda onehot + (1 - lambda) q of `rows` (eval-mode SimNet),
    with q built as the run's `neighbor_distribution` builds it (a run that predates the field
    used the neighbours' predictions)."""
    neighbors = table.knn[rows]
    neighbor_distributions = ldl.neighbor_distributions(
        restored.config.neighbor_distribution,
        probs[neighbors],
        table.labels[neighbors],
        lam[neighbors],
    )
    similarity = restored.model.apply(
        restored.variables,
        features[rows],
        features[neighbors],
        train=False,
        method=models.LDLVA.similarity,
    )
    return np.asarray(
        ldl.target_distribution(
            lam[rows],
            table.labels[rows],
            neighbor_distributions,
            table.va_weights[rows] * np.asarray(similarity),
            restored.config.num_classes,
        )
    )


def _target_distributions_in_chunks(restored, rows, lam, table, features, probs, chunk=4096):
    """`_target_distributions` of many rows, `chunk` at a time (each holds its K neighbours'
    features)."""
    return np.concatenate(
        [
            _target_distributions(
                restored, rows[start : start + chunk], lam, table, features, probs
            )
            for start in range(0, len(rows), chunk)
        ]
    )


def plot_histogram(lam, flipped, path) -> None:
    """Histogram of lambda; flipped and clean rows stacked apart when `flipped` is known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0.0, 1.0, 41)
    if flipped is None:
        axes.hist(lam, bins=bins, color="tab:blue")
    else:
        axes.hist(
            [lam[~flipped], lam[flipped]],
            bins=bins,
            stacked=True,
            color=["tab:blue", "tab:red"],
            label=["clean label", "flipped label"],
        )
        axes.legend()
    axes.set_xlabel("lambda (trust in the given label)")
    axes.set_ylabel("training rows")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_grid(images, given, probs, targets, lam, class_names, path, columns=6) -> None:
    """The images with their given and predicted labels, lambda and label distribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(2 * rows, columns, figsize=(2.2 * columns, 3.6 * rows))
    axes = np.asarray(axes).reshape(2 * rows, columns)
    for ax in axes.flat:
        ax.axis("off")
    short = [name[:3] for name in class_names]
    for i, image in enumerate(images):
        top, bar = axes[2 * (i // columns), i % columns], axes[2 * (i // columns) + 1, i % columns]
        top.imshow(image)
        top.set_title(
            f"given {class_names[given[i]]}\npred {class_names[int(np.argmax(probs[i]))]}"
            f"  λ={lam[i]:.2f}",
            fontsize=7,
        )
        bar.axis("on")
        bar.bar(range(len(class_names)), targets[i], color="tab:green")
        bar.set_ylim(0, 1)
        bar.set_xticks(range(len(class_names)), short, fontsize=6, rotation=90)
        bar.tick_params(axis="y", labelsize=6)
    figure.suptitle("lowest lambda: each image, then its label distribution y", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.3 / (3.6 * rows)))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def inspect_run(
    workdir, checkpoint="latest", out=None, grid=36, batch_size=64, html_rows=None
) -> dict:
    """Writes the ranking, plots and summary described in the module docstring; returns the
    summary. `html_rows` (None: no page; 0: every row) writes `review.html` too."""
    if html_rows is not None and html_rows < 0:
        raise ValueError(f"html_rows must be >= 0 (0: every row); got {html_rows}")
    workdir = pathlib.Path(workdir)
    restored = inference.restore_variables(
        workdir, checkpoint=checkpoint, fields=(*inference.VARIABLES, "theta")
    )
    config, step = restored.config, restored.step
    lam = np.asarray(jax.nn.sigmoid(restored.fields["theta"]))
    table = tables.read_train_table(
        config.data.train_csv,
        config.data.image_dir,
        num_classes=config.num_classes,
        num_neighbors=config.num_neighbors,
        va_bandwidth=config.data.va_bandwidth,
    )
    if len(lam) != table.num_rows:
        raise ValueError(
            f"{config.data.train_csv} has {table.num_rows} rows but the checkpoint holds "
            f"{len(lam)} lambdas: the training CSV changed since the run"
        )
    from ldl_jax.data import images as images_lib  # TensorFlow: decoding only

    images = images_lib.load_images(table.paths, config.input_size)
    features, probs = _features_and_probs(restored, images, batch_size)
    names = list(config.class_names)
    order = np.argsort(lam, kind="stable")
    frame = pd.read_csv(config.data.train_csv)
    ranking = pd.DataFrame(
        {
            "row": order,
            "subDirectory_filePath": frame["subDirectory_filePath"].to_numpy()[order],
            "given": [names[i] for i in table.labels[order]],
            "predicted": [names[i] for i in probs.argmax(-1)[order]],
            "lambda": lam[order],
        }
    )
    summary = {"workdir": str(workdir), "step": step, "num_rows": table.num_rows}
    summary["mean_lambda"] = float(lam.mean())
    flipped = None
    if CLEAN_LABEL_COLUMN in frame.columns:
        clean = frame[CLEAN_LABEL_COLUMN].to_numpy()
        flipped = table.labels != clean
        ranking["clean"] = [names[i] for i in clean[order]]
        ranking["flipped"] = flipped[order]
        if flipped.any() and not flipped.all():
            summary.update(noise_detection(lam, table.labels, clean))
    out = pathlib.Path(out) if out else workdir / "inspect" / f"{checkpoint}-{step}"
    out.mkdir(parents=True, exist_ok=True)
    ranking.to_csv(out / "lambda_ranking.csv", index=False)
    plot_histogram(lam, flipped, out / "lambda_histogram.png")
    shown = order[:grid]
    targets = _target_distributions(restored, shown, lam, table, features, probs)
    plot_grid(
        images[shown],
        table.labels[shown],
        probs[shown],
        targets,
        lam[shown],
        names,
        out / "lowest_lambda.png",
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    result = {**summary, "out": str(out)}
    if html_rows is not None:
        reviewed = order[: html_rows or len(order)]
        data = review_page.page_data(
            reviewed,
            paths=frame["subDirectory_filePath"].to_numpy(),
            labels=table.labels,
            probs=probs,
            lam=lam,
            knn=table.knn,
            targets=_target_distributions_in_chunks(
                restored, reviewed, lam, table, features, probs
            ),
            images=images,
            class_names=names,
            title=f"{workdir.name}, {checkpoint} checkpoint (step {step})",
            key=review_page.run_key(workdir, config.data.train_csv),
        )
        size = review_page.write_review_page(out / "review.html", data)
        result["review_html"] = {"rows": len(reviewed), "bytes": size}
    return result


def main(argv):
    console.setup(verbose_logs=FLAGS.verbosity >= 1)  # library logs off the console
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required")
    with console.input_errors_end_the_command():
        summary = inspect_run(
            FLAGS.workdir,
            FLAGS.checkpoint,
            FLAGS.out,
            FLAGS.grid,
            FLAGS.batch_size,
            html_rows=FLAGS.html_rows if FLAGS.html else None,
        )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    define_flags()
    app.run(main)
