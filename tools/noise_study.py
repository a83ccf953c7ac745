"""Noisy-label study: plain cross-entropy vs LDLVA on the synthetic generator, over noise levels.

  python tools/noise_study.py   # from scratch: docs/RESULTS.md, docs/noise_study.png

Generates a RAF-DB-balanced synthetic set (`--data_seed`), writes a noisy copy of its training
CSV per (noise level, flip mode, seed) with `tools/make_noisy_labels.py`'s flips, trains every
method on every copy (`configs/synthetic.py`'s model and schedule unless overridden), and
writes `--results` (a Markdown table, mean ± std over seeds) and `--plot` (PNG). By default
every run starts from random weights, as `configs/synthetic.py` trains; `--pretrain_epochs=N`
starts every run from a pre-trained backbone instead, as the paper does: N epochs of
cross-entropy on a disjoint clean synthetic set, trained once per study. Finished runs
are skipped, so an interrupted study continues where it stopped; a run interrupted half-way
resumes from its own checkpoint.

Methods: `METHODS` below (config overrides on top of `--config` and how the report describes
them). `--methods` run at every noise level and flip mode;
`--ablations` run only at `--ablation_noise` (proportional flips), to keep the study short.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time
from typing import NamedTuple

import numpy as np
import pandas as pd

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.make_noisy_labels import flip_labels  # noqa: E402


class Method(NamedTuple):
    overrides: dict  # config overrides on top of --config
    description: str  # how the report describes it


METHODS = {
    "ce": Method(
        {"gamma": 0.0, "lamb_init": 30.0, "lamb_lr": 0.0, "prior_correction": False},
        "plain cross-entropy (λ fixed at 1, no centre loss)",
    ),
    "ldlva": Method(
        {},
        "LDLVA as ldl_jax's configs run it (each class keeps a mean λ set by how much its rows' "
        "VA neighbours agree; each neighbour brings its label, weighted by its λ, and its "
        "prediction into q; the prior correction at evaluation)",
    ),
    "ldlva_reference": Method(
        {
            "lamb_fixed_class_mean": False,
            "lamb_lr": 10.0,
            "neighbor_distribution": "prediction",
            "prior_correction": False,
        },
        "LDLVA as the reference runs it (λ free per row, `lamb_lr` 10, q from the neighbours' "
        "predictions, no prior correction)",
    ),
    "ldlva_uncorrected": Method(
        {"prior_correction": False},
        "`ldlva` without the prior correction (the logits as trained)",
    ),
    "ldlva_bank": Method(
        {"neighbors": "memory_bank"},
        "`ldlva` with the neighbour memory bank (the neighbours' last central pass instead of "
        "a forward pass on their images)",
    ),
    "ldlva_init_mean": Method(
        {"lamb_class_mean": "lamb_init"},
        "`ldlva` with every class's mean λ at `lamb_init`",
    ),
    "ldlva_prediction": Method(
        {"neighbor_distribution": "prediction"},
        "`ldlva` with q made of the neighbours' predictions alone, as in the reference",
    ),
}
# Methods whose lambda is learned: their noise-detection figures are reported.
LEARNS_LAMBDA = tuple(method for method in METHODS if method != "ce")


def run_name(method: str, noise: float, mode: str, seed: int) -> str:
    level = int(round(noise * 100))
    return f"{method}_{'clean' if level == 0 else f'{mode}{level}'}_s{seed}"


def plan(args) -> list[dict]:
    """Every run of the study, main grid first."""
    cells = []
    for method in args.methods:
        for noise in args.noise:
            for mode in args.modes if noise > 0 else args.modes[:1]:
                cells.append((method, noise, mode))
    for method in args.ablations:
        for noise in args.ablation_noise:
            cells.append((method, noise, "proportional"))
    runs = []
    for seed in args.seeds:
        for method, noise, mode in cells:
            mode = mode if noise > 0 else "clean"
            runs.append(
                {
                    "name": run_name(method, noise, mode, seed),
                    "method": method,
                    "noise": noise,
                    "mode": mode,
                    "seed": seed,
                }
            )
    return runs


# What defines a study's data and starting point: a study folder holds runs of one setting,
# so a later call with other values is refused rather than mixed into its results.
STUDY_SETTINGS = (
    "config",
    "set",
    "data_seed",
    "num_train",
    "num_test",
    "image_size",
    "pretrain_epochs",
    "pretrain_num_train",
    "pretrain_data_seed",
    "va_regressor",
)
# The clean training CSV with valence, arousal and knn from `--va_regressor`.
REGRESSOR_TRAIN_CSV = "train_regressor_va.csv"


def check_study_settings(args) -> None:
    """Records the study's settings in OUT/study.json, or refuses ones that differ from them."""
    path = pathlib.Path(args.out) / "study.json"
    settings = {name: getattr(args, name) for name in STUDY_SETTINGS}
    if path.exists():
        saved = json.loads(path.read_text())
        changed = [
            f"--{name} was {saved.get(name)!r}, now {value!r}"
            for name, value in settings.items()
            if saved.get(name) != value
        ]
        if changed:
            raise SystemExit(
                f"{args.out} holds a study with other settings ({'; '.join(changed)}): "
                "use another --out"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=1))


def prepare_data(args) -> pathlib.Path:
    """The clean synthetic set (generated once) under OUT/data; with `--va_regressor`, also its
    training CSV with that regressor's valence, arousal and VA neighbours."""
    from ldl_jax import synthetic

    data = pathlib.Path(args.out) / "data"
    if not (data / "clean" / "train.csv").exists():
        synthetic.make_synthetic_fer(
            data / "clean",
            seed=args.data_seed,
            num_train=args.num_train,
            num_test=args.num_test,
            image_size=args.image_size,
            num_neighbors=20,
            class_balance="rafdb",
        )
    if args.va_regressor and not clean_train_csv(args, data).exists():
        from ldl_jax import annotate_va

        annotate_va.annotate(
            args.va_regressor,
            data / "clean" / "train.csv",
            data / "clean" / "images",
            clean_train_csv(args, data),
        )
    return data


def clean_train_csv(args, data: pathlib.Path) -> pathlib.Path:
    """The clean training CSV: the generator's, or with `--va_regressor` its annotated copy."""
    return data / "clean" / (REGRESSOR_TRAIN_CSV if args.va_regressor else "train.csv")


def neighbor_label_purity(csv_path: pathlib.Path, num_neighbors: int) -> float:
    """The share of each row's `num_neighbors` nearest VA neighbours with the row's label."""
    frame = pd.read_csv(csv_path)
    labels = frame["expression"].to_numpy()
    knn = np.array([[int(j) for j in row.split(";")[:num_neighbors]] for row in frame["knn"]])
    return float((labels[knn] == labels[:, None]).mean())


def train_csv(clean: pathlib.Path, run: dict) -> pathlib.Path:
    """The run's training CSV, `clean` or a noisy copy of it beside its folder; noisy copies
    keep the clean label in `expression_backup`."""
    data = clean.parent.parent
    if run["noise"] == 0:
        return clean
    path = data / f"train_{run['mode']}{int(round(run['noise'] * 100))}_s{run['seed']}.csv"
    if not path.exists():
        frame = pd.read_csv(clean)
        noisy = flip_labels(frame["expression"].to_numpy(), run["noise"], run["mode"], run["seed"])
        frame.assign(expression_backup=frame["expression"], expression=noisy).to_csv(
            path.with_suffix(".tmp"), index=False
        )
        path.with_suffix(".tmp").replace(path)
    return path


def run_overrides(args, data: pathlib.Path, run: dict, pretrained: str) -> dict:
    """Config overrides (dotted name -> value) of one run."""
    overrides = {
        "model.pretrained": pretrained,
        "data.synthetic.dir": str(data / "clean"),  # exists: nothing is generated
        "data.image_dir": str(data / "clean" / "images"),
        "data.train_csv": str(train_csv(clean_train_csv(args, data), run)),
        "data.val_csv": "",
        "data.test_csv": str(data / "clean" / "test.csv"),
        "seed": run["seed"],
    }
    overrides.update(METHODS[run["method"]].overrides)
    overrides.update(_parse_sets(args.set))
    return overrides


def _parse_sets(items: list[str]) -> dict:
    """--set KEY=VALUE items as overrides; VALUE is JSON where it parses, else a string."""
    overrides = {}
    for item in items:
        key, value = item.split("=", 1)
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _flag(key: str, value) -> str:
    if isinstance(value, bool | int | float | str):
        return f"--config.{key}={json.dumps(value) if isinstance(value, bool) else value}"
    return f"--config.{key}={tuple(value)!r}"


def _load_config(path: str, overrides: dict):
    spec = importlib.util.spec_from_file_location("study_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def train_one(args, workdir: pathlib.Path, overrides: dict) -> None:
    """Trains one run in `workdir`: in this process (--jobs=1) or a child process."""
    if args.jobs == 1:
        from ldl_jax import train

        train.train_and_evaluate(_load_config(args.config, overrides), workdir)
        return
    command = [sys.executable, "-m", "ldl_jax.main", f"--config={args.config}"]
    command += [f"--workdir={workdir}"] + [_flag(k, v) for k, v in overrides.items()]
    log = pathlib.Path(args.out) / "logs" / f"{workdir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(pathlib.Path(args.out) / "xla_cache"))
    with open(log, "w") as out:
        finished = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
        )
    if finished.returncode:
        raise RuntimeError(f"run {workdir.name} failed (exit {finished.returncode}); see {log}")


def pretrain(args) -> str:
    """The backbone every run starts from: "" (from scratch) when --pretrain_epochs is 0.

    The stand-in for the face-recognition pre-training the paper starts from: plain
    cross-entropy on a disjoint, clean synthetic set (`--pretrain_data_seed`, the generator's
    default class balance), trained once per study in OUT/pretrain.
    """
    if args.pretrain_epochs == 0:
        return ""
    from ldl_jax import synthetic

    out = pathlib.Path(args.out)
    workdir = out / "pretrain"
    if (workdir / "eval_results.json").exists():
        return str(workdir)
    data = out / "pretrain_data"
    if not (data / "train.csv").exists():
        synthetic.make_synthetic_fer(
            data,
            seed=args.pretrain_data_seed,
            num_train=args.pretrain_num_train,
            num_test=args.num_test,
            image_size=args.image_size,
            num_neighbors=20,
        )
    epochs = args.pretrain_epochs
    overrides = {
        "data.synthetic.dir": str(data),
        "data.image_dir": str(data / "images"),
        "data.train_csv": str(data / "train.csv"),
        "data.val_csv": "",
        "data.test_csv": str(data / "test.csv"),
        "num_epochs": epochs,
        "lr_steps": (max(1, round(epochs * 2 / 3)), max(1, round(epochs * 0.9))),
        **METHODS["ce"].overrides,
    }
    overrides.update(_parse_sets(args.set))
    print(f"pre-training the backbone for {epochs} epochs in {workdir}", flush=True)
    train_one(args, workdir, overrides)
    return str(workdir)


def measure(args, run: dict) -> dict:
    """Test accuracy of a finished run and, for learned lambda under noise, its detection."""
    from ldl_jax import inspect as lambda_inspect

    workdir = pathlib.Path(args.out) / "runs" / run["name"]
    test = json.loads((workdir / "eval_results.json").read_text())["test"]
    result = {
        **run,
        "accuracy": test["accuracy"],
        "balanced_accuracy": test["balanced_accuracy"],
        "per_class_accuracy": test["per_class_accuracy"],
    }
    if run["method"] in LEARNS_LAMBDA and run["noise"] > 0:
        config, lam, _ = lambda_inspect.read_lambdas(workdir)
        frame = pd.read_csv(config.data.train_csv)
        result.update(
            lambda_inspect.noise_detection(
                lam, frame["expression"].to_numpy(), frame["expression_backup"].to_numpy()
            )
        )
    return result


def run_study(args) -> dict[str, dict]:
    """Runs (or skips, when finished) every planned run; returns name -> result."""
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    check_study_settings(args)
    data = prepare_data(args)
    pretrained = pretrain(args)
    runs = plan(args)
    todo = [run for run in runs if run["name"] not in results]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already finished", flush=True)
    started = time.time()

    def finish(run):
        results[run["name"]] = measure(args, run)
        results_path.with_suffix(".tmp").write_text(json.dumps(results, indent=1))
        results_path.with_suffix(".tmp").replace(results_path)
        remaining = sum(r["name"] not in results for r in runs)
        done = len(runs) - remaining
        elapsed = time.time() - started
        per_run = elapsed / max(1, len(todo) - remaining)
        r = results[run["name"]]
        print(
            f"[{done}/{len(runs)}] {run['name']}: test {r['accuracy']:.4f}, balanced "
            f"{r['balanced_accuracy']:.4f}"
            + (f", lambda precision@k {r['precision_at_k']:.3f}" if "precision_at_k" in r else "")
            + f" | {elapsed / 60:.1f} min, ~{remaining * per_run / 60:.0f} min left",
            flush=True,
        )

    # Noisy CSVs are written here, never by two workers at once.
    jobs = {run["name"]: run_overrides(args, data, run, pretrained) for run in todo}
    runs_dir = out / "runs"
    if args.jobs == 1:
        for run in todo:
            train_one(args, runs_dir / run["name"], jobs[run["name"]])
            finish(run)
    else:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {
                pool.submit(train_one, args, runs_dir / run["name"], jobs[run["name"]]): run
                for run in todo
            }
            for future in concurrent.futures.as_completed(futures):
                future.result()
                finish(futures[future])
    return {run["name"]: results[run["name"]] for run in runs}


def summarize(results: dict[str, dict]) -> pd.DataFrame:
    """One row per (method, noise, mode): mean and std over seeds of every figure."""
    frame = pd.DataFrame(results.values())
    figures = [
        c
        for c in ("accuracy", "balanced_accuracy", "precision_at_k", "auroc")
        if c in frame.columns
    ]
    grouped = frame.groupby(["method", "mode", "noise"], sort=False)[figures]
    table = grouped.agg(["mean", "std", "count"])
    table.columns = [f"{figure}_{stat}" for figure, stat in table.columns]
    return table.reset_index()


def _cell(row, figure: str, percent: bool = True) -> str:
    mean, std = row.get(f"{figure}_mean"), row.get(f"{figure}_std")
    if mean is None or np.isnan(mean):
        return ""
    scale = 100 if percent else 1
    digits = 1 if percent else 3
    std_text = "" if np.isnan(std) else f" ± {std * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f}{std_text}"


def markdown_table(summary: pd.DataFrame) -> str:
    """Rows (noise, mode), one column group per method: test and balanced accuracy (%),
    lambda's precision@k where lambda is learned under noise."""
    lines = [
        "| noise | flips | method | seeds | test accuracy (%) | balanced accuracy (%) "
        "| λ precision@k | λ AUROC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ordered = summary.sort_values(["noise", "mode"], kind="stable")
    for _, row in ordered.iterrows():
        lines.append(
            f"| {int(round(row['noise'] * 100))}% | {row['mode']} | {row['method']} "
            f"| {int(row['accuracy_count'])} | {_cell(row, 'accuracy')} "
            f"| {_cell(row, 'balanced_accuracy')} | {_cell(row, 'precision_at_k', False)} "
            f"| {_cell(row, 'auroc', False)} |"
        )
    return "\n".join(lines)


def plot(summary: pd.DataFrame, path: pathlib.Path) -> None:
    """Test accuracy against noise, one panel per flip mode, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ("proportional", "uniform") if m in set(summary["mode"])] or ["clean"]
    figure, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
    levels = summary["noise"].nunique()
    for ax, mode in zip(axes[0], modes, strict=True):
        for method, rows in summary.groupby("method", sort=False):
            rows = rows[(rows["mode"] == mode) | (rows["mode"] == "clean")].sort_values("noise")
            if len(rows) < 2:
                continue
            ax.errorbar(
                rows["noise"] * 100,
                rows["accuracy_mean"] * 100,
                yerr=rows["accuracy_std"].fillna(0) * 100,
                marker="o",
                capsize=3,
                label=method,
                linestyle="-" if len(rows) == levels else ":",  # ablations: only some levels
            )
        ax.set_title(f"{mode} label flips")
        ax.set_xlabel("flipped training labels (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a method with one noise level draws no line
            ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(args, summary: pd.DataFrame, command: str) -> None:
    results_path = pathlib.Path(args.results)
    plot_path = pathlib.Path(args.plot)
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    plot(summary, plot_path)
    relative_plot = os.path.relpath(plot_path, results_path.parent)
    overrides = f" with {', '.join(args.set)}" if args.set else ""
    if args.pretrain_epochs:
        start = (
            f"Every run starts from the same pre-trained backbone, as the paper's runs do: "
            f"{args.pretrain_epochs} epochs of plain cross-entropy on a disjoint, clean synthetic "
            f"set ({args.pretrain_num_train} images, data seed {args.pretrain_data_seed}, the "
            f"generator's default class balance), a stand-in for face-recognition pre-training."
        )
    else:
        start = "Every run starts from random weights."
    num_neighbors = _load_config(args.config, _parse_sets(args.set)).num_neighbors
    clean = clean_train_csv(args, pathlib.Path(args.out) / "data")
    source = (
        f"the predictions of the VA regressor in `{args.va_regressor}` "
        "(`ldl_jax.annotate_va`), as on RAF-DB"
        if args.va_regressor
        else "the generator's true valence and arousal"
    )
    neighbours = (
        f"VA neighbours from {source}: {neighbor_label_purity(clean, num_neighbors):.1%} of "
        f"each row's {num_neighbors} nearest share its clean label."
    )
    data_text = textwrap.fill(
        f"Data: the built-in synthetic generator with RAF-DB's class balance (data seed "
        f"{args.data_seed}, {args.num_train} training / {args.num_test} test images at "
        f"{args.image_size} px). Per seed, a noisy copy of the training labels "
        "(`tools/make_noisy_labels.py`'s flips), seeded by the run's seed, which also seeds "
        f"initialisation and augmentation. {neighbours} Model and schedule: `{args.config}`"
        f"{overrides}. {start}",
        width=96,
        break_on_hyphens=False,
    )
    used = dict.fromkeys([*args.methods, *args.ablations])
    methods = textwrap.fill(
        "Methods: " + "; ".join(f"`{name}` {METHODS[name].description}" for name in used) + ".",
        width=96,
        break_on_hyphens=False,
    )
    text = f"""# Noisy-label study

Generated by

```
{command}
```

{data_text}

{methods}

Test accuracy is that of the final checkpoint on the clean test set. λ precision@k is the share
of flipped rows among the k lowest-λ rows (k = the number of flipped rows); λ AUROC that of
1 - λ as a detector of flipped rows. Figures are mean ± std over seeds.

{markdown_table(summary)}

![test accuracy against noise]({relative_plot})
"""
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(text)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    names = [x for x in text.split(",") if x]
    for name in names:
        if name not in METHODS:
            raise argparse.ArgumentTypeError(f"unknown method {name!r}; use {sorted(METHODS)}")
    return names


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/noise_study", help="Data, runs and results.json.")
    parser.add_argument("--config", default="configs/synthetic.py")
    parser.add_argument("--methods", type=_names, default=["ce", "ldlva"])
    parser.add_argument("--noise", type=_floats, default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["proportional", "uniform"])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument(
        "--ablations",
        type=_names,
        default=["ldlva_prediction", "ldlva_reference", "ldlva_uncorrected"],
    )
    parser.add_argument("--ablation_noise", type=_floats, default=[0.0, 0.3])
    parser.add_argument("--data_seed", type=int, default=1)
    parser.add_argument("--num_train", type=int, default=3000)
    parser.add_argument("--num_test", type=int, default=700)
    parser.add_argument("--image_size", type=int, default=48)
    parser.add_argument(
        "--pretrain_epochs",
        type=int,
        default=0,
        help="Epochs of cross-entropy pre-training on a disjoint clean set; 0: from scratch.",
    )
    parser.add_argument("--pretrain_num_train", type=int, default=4000)
    parser.add_argument(
        "--va_regressor",
        default="",
        help="A VA regressor's workdir (config.task 'va'): the training rows' valence, arousal "
        "and VA neighbours come from its predictions (ldl_jax.annotate_va), as on RAF-DB, "
        "instead of the generator's true values.",
    )
    parser.add_argument("--pretrain_data_seed", type=int, default=7)
    parser.add_argument(
        "--set", action="append", default=[], help="Config override for every run, KEY=VALUE."
    )
    parser.add_argument("--jobs", type=int, default=2, help="Runs trained at once.")
    parser.add_argument("--results", default="docs/RESULTS.md")
    parser.add_argument("--plot", default="docs/noise_study.png")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    for mode in args.modes:
        if mode not in ("proportional", "uniform"):
            raise SystemExit(f"--modes: unknown flip mode {mode!r}")
    results = run_study(args)
    summary = summarize(results)
    write_report(args, summary, " ".join(["python tools/noise_study.py", *argv]))
    print(markdown_table(summary))


if __name__ == "__main__":
    main()
