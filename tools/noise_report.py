"""The noise study's report: tables (mean ± std over seeds) and a plot from its results.json.

`write_report(description, results, results_path, plot_path)` writes the Markdown page that
`tools/noise_study.py` generates; every figure in it comes from the runs' results.
"""

from __future__ import annotations

import os
import pathlib
import textwrap

import numpy as np
import pandas as pd

# The methods LDLVA's claims are made against: each sees the same noisy labels and, where it
# uses them at all, the same VA neighbours.
BASELINES = ("ce", "label_smoothing", "gce", "knn_relabel", "ldlva_reference")
CLAIMED = "ldlva"
FIGURES = (
    "picked_accuracy",
    "picked_balanced_accuracy",
    "final_accuracy",
    "final_balanced_accuracy",
    "picked_step",
    "precision_at_k",
    "auroc",
    "relabelled_correct",
)


def select_candidates(results: dict[str, dict]) -> dict[str, dict]:
    """Per (method, noise, mode, seed), the run of the candidate setting with the best noisy
    validation accuracy (ties: the first planned, the method's own setting); each kept result
    names its candidate ("" for the method's own) in `candidate`."""
    chosen = {}
    for result in results.values():
        key = (result["method"], result["noise"], result["mode"], result["seed"])
        if key not in chosen or result["picked_val_accuracy"] > chosen[key]["picked_val_accuracy"]:
            chosen[key] = result
    return {result["name"]: result for result in chosen.values()}


def summarize(results: dict[str, dict], by_candidate: bool = False) -> pd.DataFrame:
    """One row per (method, noise, mode), or per (method + candidate, noise, mode) with
    `by_candidate`: mean, std and count over seeds of every figure, and which candidates the
    rows hold (`candidates`, e.g. "own ×1, +lamb_init=1.5 ×2")."""
    frame = pd.DataFrame(results.values())
    frame["candidate"] = frame["candidate"].fillna("") if "candidate" in frame else ""
    if by_candidate:
        frame["method"] = frame["method"] + frame["candidate"]
    figures = [figure for figure in FIGURES if figure in frame.columns]
    grouped = frame.groupby(["method", "mode", "noise"], sort=False)
    table = grouped[figures].agg(["mean", "std", "count"])
    table.columns = [f"{figure}_{stat}" for figure, stat in table.columns]
    table["candidates"] = grouped["candidate"].agg(
        lambda labels: ", ".join(
            f"{label or 'own'} ×{count}" for label, count in labels.value_counts().items()
        )
    )
    return table.reset_index()


def _cell(row, figure: str, percent: bool = True) -> str:
    mean, std = row.get(f"{figure}_mean"), row.get(f"{figure}_std")
    if mean is None or np.isnan(mean):
        return ""
    scale, digits = (100, 1) if percent else (1, 3)
    std_text = "" if std is None or np.isnan(std) else f" ± {std * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f}{std_text}"


def markdown_table(summary: pd.DataFrame) -> str:
    """Rows (noise, mode, method): test accuracy and balanced accuracy (%) at the checkpoint
    picked on the noisy validation split and at the final one; lambda's detection of the
    flipped rows where it is learned; the relabelling vote's share of right training labels."""
    lines = [
        "| noise | flips | method | seeds (setting) | picked: test acc. | picked: balanced "
        "| final: test acc. | final: balanced | λ precision@k | λ AUROC "
        "| labels right after the vote |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ordered = summary.sort_values(["noise", "mode"], kind="stable")
    for _, row in ordered.iterrows():
        lines.append(
            f"| {int(round(row['noise'] * 100))}% | {row['mode']} | {row['method']} "
            f"| {row['candidates']} | {_cell(row, 'picked_accuracy')} "
            f"| {_cell(row, 'picked_balanced_accuracy')} | {_cell(row, 'final_accuracy')} "
            f"| {_cell(row, 'final_balanced_accuracy')} "
            f"| {_cell(row, 'precision_at_k', False)} | {_cell(row, 'auroc', False)} "
            f"| {_cell(row, 'relabelled_correct')} |"
        )
    return "\n".join(lines)


def baselines_sentence(summary: pd.DataFrame) -> str:
    """Which baselines the claim table weighs LDLVA against, and which the study left out."""
    ran = [name for name in BASELINES if name in set(summary["method"])]
    left_out = [name for name in BASELINES if name not in ran]
    return (
        f"Baselines: {', '.join(ran)}; the best is the one with the highest mean picked test "
        "accuracy in that row."
        + (
            f" This study did not run {', '.join(left_out)}: the best of the baselines above "
            "need not be the best baseline."
            if left_out
            else ""
        )
    )


def claim_table(summary: pd.DataFrame) -> str:
    """Per (noise, mode): LDLVA minus the best baseline (by mean picked test accuracy) and minus
    cross-entropy, in points of picked test and balanced accuracy; empty without LDLVA."""
    lines = [
        "| noise | flips | best baseline | LDLVA − best baseline: acc. / balanced "
        "| LDLVA − CE: acc. / balanced |",
        "|---|---|---|---|---|",
    ]
    ordered = summary.sort_values(["noise", "mode"], kind="stable")
    for (noise, mode), cell in ordered.groupby(["noise", "mode"], sort=False):
        by_method = cell.set_index("method")
        baselines = by_method.loc[by_method.index.intersection(BASELINES)]
        if CLAIMED not in by_method.index or baselines.empty:
            continue
        best = baselines["picked_accuracy_mean"].idxmax()
        claimed = by_method.loc[CLAIMED]

        def gap(other, claimed=claimed):
            return " / ".join(
                f"{100 * (claimed[f'{f}_mean'] - other[f'{f}_mean']):+.1f}"
                for f in ("picked_accuracy", "picked_balanced_accuracy")
            )

        against_ce = gap(by_method.loc["ce"]) if "ce" in by_method.index else ""
        lines.append(
            f"| {int(round(noise * 100))}% | {mode} | {best} | {gap(by_method.loc[best])} "
            f"| {against_ce} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def plot(summary: pd.DataFrame, path: pathlib.Path) -> None:
    """Picked test accuracy against noise, one panel per flip mode, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("proportional", "uniform") if m in set(summary["mode"])] or ["clean"]
    figure, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), squeeze=False)
    levels = summary["noise"].nunique()
    for ax, mode in zip(axes[0], modes, strict=True):
        for method, rows in summary.groupby("method", sort=False):
            rows = rows[(rows["mode"] == mode) | (rows["mode"] == "clean")].sort_values("noise")
            if len(rows) < 2:
                continue
            ax.errorbar(
                rows["noise"] * 100,
                rows["picked_accuracy_mean"] * 100,
                yerr=rows["picked_accuracy_std"].fillna(0) * 100,
                marker="o",
                capsize=3,
                label=method,
                linestyle="-" if len(rows) == levels else ":",  # ablations: only some levels
            )
        ax.set_title(f"{mode} label flips")
        ax.set_xlabel("flipped training labels (%)")
        ax.set_ylabel("test accuracy (%), checkpoint picked on noisy val")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a method with one noise level draws no line
            ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=96, break_on_hyphens=False)


def describe_data(d: dict) -> str:
    """The report's paragraph on the data, the neighbours, the protocol and the start."""
    source = (
        f"the predictions of the VA regressor in `{d['va_regressor']}` (`ldl_jax.annotate_va`), "
        "as on RAF-DB"
        if d["va_regressor"]
        else "the generator's true valence and arousal"
    )
    if d["pretrain_epochs"]:
        start = (
            f"Every run starts from the same pre-trained backbone, as the paper's runs do: "
            f"{d['pretrain_epochs']} epochs of plain cross-entropy on a disjoint, clean synthetic "
            f"set ({d['pretrain_num_train']} images, data seed {d['pretrain_data_seed']}), a "
            "stand-in for face-recognition pre-training."
        )
    else:
        start = "Every run starts from random weights."
    role = (
        "a **confirmation** set: run once, after the defaults were frozen"
        if d["confirmation"]
        else "a tuning set: looked at while the method and its defaults were chosen"
    )
    overrides = f" with {', '.join(d['sets'])}" if d["sets"] else ""
    return _wrap(
        f"Data: the built-in synthetic generator with RAF-DB's class balance, data seed "
        f"{d['data_seed']} ({role}); {d['num_train']} training images (of which "
        f"{d['val_fraction']:.0%} are held out with their noisy labels as the validation split) "
        f"and {d['num_test']} clean test images at {d['image_size']} px. VA neighbours from "
        f"{source}: **{d['purity']:.1%}** of each row's {d['num_neighbors']} nearest share its "
        "clean label (the neighbour label purity). Labels are flipped per (data seed, seed) "
        "with `tools/make_noisy_labels.py`'s scheme; the seed also seeds initialisation and "
        f"augmentation. Model and schedule: `{d['config']}`{overrides}. {start} Each run "
        f"is validated every {d['val_every_steps']} steps on the noisy validation split; "
        "'picked' is the checkpoint with the best validation accuracy, 'final' the last one. "
        "Test never chooses anything. The clean training CSV every run's labels and neighbours "
        f"come from has SHA-256 `{d['train_csv_sha256'][:16]}`: a study continued on another "
        "machine must find the same."
    )


def write_report(description: dict, results: dict, results_path, plot_path) -> None:
    results_path, plot_path = pathlib.Path(results_path), pathlib.Path(plot_path)
    summary = summarize(select_candidates(results))
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(summary, plot_path)
    methods = _wrap(
        "Methods: "
        + "; ".join(f"`{name}` {text}" for name, text in description["methods"].items())
        + "."
    )
    claims = claim_table(summary)
    selection = _wrap(
        "Each method's own setting and its candidates (in its description) are all trained; "
        "per noise level and seed, the one with the best noisy-validation accuracy is "
        "reported ('seeds (setting)' counts which). Plain cross-entropy has no candidate."
        if description["alternatives"]
        else "Each method is trained with its own setting only (`--no-alternatives`)."
    )
    claim_text = (
        f"\n## LDLVA against the best baseline\n\n{_wrap(baselines_sentence(summary))}\n\n"
        f"{claims}\n"
        if claims
        else ""
    )
    text = f"""# Noisy-label study

Generated by

```
{description["command"]}
```

{describe_data(description)}

{methods}

{selection}

λ precision@k is the share of flipped rows among the k lowest-λ rows (k = the number of
flipped training rows), λ AUROC that of 1 - λ as a detector of flipped rows, both at the final
checkpoint. Figures are mean ± std over seeds.
{claim_text}
## Every method, its setting picked on the noisy validation split

{markdown_table(summary)}

## Every setting trained

{markdown_table(summarize(results, by_candidate=True))}

![picked test accuracy against noise]({os.path.relpath(plot_path, results_path.parent)})
"""
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(text)
