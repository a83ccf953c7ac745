"""Which training rows are mislabelled: λ against cleanlab and the plain cross-entropy loss.

  pip install -r tools/requirements-study.txt   # cleanlab: AGPL-3.0, never a package dependency
  python tools/detector_study.py --study=runs/confirm_scratch --noise=0.1,0.2,0.3 \\
      --modes=proportional,uniform --seeds=0,1,2 --results=docs/RESULTS_detectors.md

Reads a noise study's folder (`tools/noise_study.py --out`): per (noise level, flip mode, seed)
its training split (noisy labels, the clean ones in `expression_backup`), its noisy validation
split and three of its finished runs, and scores every training row as a suspect by:

- λ of `ldlva_reference` (the defaults) and of `ldlva` (ldl_jax's deviations), final
  checkpoint: the training run itself, 1 run each;
- the cross-entropy loss of the `ce` baseline's checkpoint picked on the noisy validation
  split, on its own training rows: 1 run;
- cleanlab's confident learning (Northcutt et al., JAIR 2021): out-of-fold class probabilities
  from `--folds` cross-entropy models, each trained on the other folds with the `ce` baseline's
  config and picked on the same noisy validation split (K runs). Rows are ranked by cleanlab's
  label-quality score (`cleanlab.rank.get_label_quality_scores`, its default self-confidence:
  the out-of-fold cross-entropy loss in another order-preserving form), and
  `cleanlab.filter.find_label_issues` names the rows it would drop, without being told how many
  labels were flipped.

precision@k: the share of flipped rows among the k most suspect (k = the number of flipped
rows); AUROC over all training rows. The fold runs live in STUDY/detectors/ (finished ones are
skipped, so an interrupted study continues), the figures in STUDY/detectors/results.json and
`--results`. The noise study's runs this reads must exist: it says which are missing and the
command that trains them.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import pathlib
import sys
import types

import numpy as np
import pandas as pd

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ldl_jax.va_knn import format_knn_column, knn_in_va_space  # noqa: E402
from tools import noise_splits, noise_study  # noqa: E402

# The noise study's runs each cell reads: (its method, the detector it gives).
LAMBDA_RUNS = {"ldlva_reference": "λ, `ldlva_reference` (defaults)", "ldlva": "λ, `ldlva`"}
CE_RUN = "ce"
CE_LOSS = "cross-entropy loss, `ce`"
CLEANLAB = "cleanlab, {k}-fold out-of-fold"
# Each cell's figures name the training data its runs read, as the noise study's record does:
# the SHA-256 of the clean training CSV (VA and neighbours included).
DATA_DIGEST = "train_csv_sha256"
# The fold assignment's key in the (data seed, seed) random stream.
_FOLD_STREAM = 0xF01D


def cells(args) -> list[dict]:
    """Every (noise, mode, seed) the study scores, as noise_study run records of `ce`."""
    return [
        {"method": CE_RUN, "candidate": "", "noise": noise, "mode": mode, "seed": seed}
        for seed in args.seeds
        for noise in args.noise
        for mode in args.modes
    ]


def cell_name(cell: dict) -> str:
    """'proportional30_s0': the cell's split folder name under STUDY/data/splits."""
    return noise_study.split_name(cell)


def study_run(study: pathlib.Path, method: str, cell: dict) -> pathlib.Path:
    return study / "runs" / noise_study.run_name(method, cell["noise"], cell["mode"], cell["seed"])


def missing_runs(study: pathlib.Path, cell_list: list[dict]) -> list[str]:
    """The noise study's runs that scoring these cells reads and that have not finished."""
    needed = [CE_RUN, *LAMBDA_RUNS]
    return [
        study_run(study, method, cell).name
        for cell in cell_list
        for method in needed
        if not (study_run(study, method, cell) / "eval_results.json").exists()
    ]


def fold_of_rows(labels: np.ndarray, folds: int, data_seed: int, seed: int) -> np.ndarray:
    """(N,) fold index of each row, stratified by its (noisy) label: each class's rows are
    shuffled and dealt out in turn, so every fold holds about 1/K of every class."""
    rng = np.random.default_rng([data_seed, seed, _FOLD_STREAM])
    fold = np.empty(len(labels), np.int64)
    start = 0
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        fold[rows] = (start + np.arange(len(rows))) % folds
        start += len(rows)
    return fold


def fold_train_frame(train: pd.DataFrame, fold: np.ndarray, held_out: int) -> pd.DataFrame:
    """The training rows outside fold `held_out`, their VA neighbours rebuilt among
    themselves (as the noise study's splits rebuild them)."""
    kept = train.loc[fold != held_out].reset_index(drop=True)
    va = kept[["valence", "arousal"]].to_numpy(np.float64)
    kept["knn"] = format_knn_column(knn_in_va_space(va, noise_splits.NUM_NEIGHBORS_WRITTEN))
    return kept


def detection(suspicion: np.ndarray, flipped: np.ndarray) -> dict[str, float]:
    """precision@k and AUROC of `suspicion` (higher: more likely flipped)."""
    from ldl_jax import inspect as lambda_inspect

    return {
        "precision_at_k": lambda_inspect.precision_at_k(-np.asarray(suspicion), flipped),
        "auroc": lambda_inspect.auroc(suspicion, flipped),
    }


def cleanlab_detection(given: np.ndarray, oof_probs: np.ndarray, flipped: np.ndarray) -> dict:
    """cleanlab's ranking and its set of label issues, from out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    quality = get_label_quality_scores(given, oof_probs)
    issues = find_label_issues(given, oof_probs, n_jobs=1)  # no fork beside JAX's threads
    return {
        **detection(-quality, flipped),
        "flagged": int(issues.sum()),
        "flagged_precision": float(flipped[issues].mean()) if issues.any() else float("nan"),
        "flagged_recall": float(issues[flipped].mean()),
    }


class Study:
    """A noise study's folder and how its `ce` runs were configured."""

    def __init__(self, args):
        self.folder = pathlib.Path(args.study)
        settings = json.loads((self.folder / "study.json").read_text())
        # What noise_study's run helpers read of their args.
        self.args = types.SimpleNamespace(**settings, out=str(self.folder), jobs=args.jobs)
        self.folds = args.folds
        self.pretrained = str(self.folder / "pretrain") if settings["pretrain_epochs"] else ""

    def ce_overrides(self, cell: dict) -> dict:
        """The config overrides of the noise study's `ce` run of `cell`."""
        return noise_study.run_overrides(self.args, self.folder / "data", cell, self.pretrained)

    def fold_workdir(self, cell: dict, held_out: int) -> pathlib.Path:
        return self.folder / "detectors" / f"cefold{held_out + 1}of{self.folds}_{cell_name(cell)}"

    def fold_overrides(self, cell: dict, held_out: int) -> dict:
        """The `ce` run's overrides with the training rows outside fold `held_out` (their CSV
        written here once)."""
        overrides = self.ce_overrides(cell)
        train_csv = pathlib.Path(overrides["data.train_csv"])
        path = train_csv.with_name(f"train_cefold{held_out + 1}of{self.folds}.csv")
        if not path.exists():
            train = pd.read_csv(train_csv)
            fold = fold_of_rows(
                train["expression"].to_numpy(), self.folds, self.args.data_seed, cell["seed"]
            )
            noise_splits.write_csv(fold_train_frame(train, fold, held_out), path)
        return {**overrides, "data.train_csv": str(path)}

    def train_fold(self, workdir: pathlib.Path, overrides: dict) -> None:
        variant = noise_study.METHODS[CE_RUN].variant
        noise_study.train_one(self.args, workdir, variant, overrides, evaluate_best=False)

    def score(self, cell: dict) -> dict[str, dict]:
        """Every detector's figures on one cell's training rows (its runs finished)."""
        from ldl_jax import inference
        from ldl_jax import inspect as lambda_inspect
        from ldl_jax.data import images, tables

        train_csv = self.ce_overrides(cell)["data.train_csv"]
        train = pd.read_csv(train_csv)
        given = train["expression"].to_numpy()
        flipped = given != train["expression_backup"].to_numpy()
        ce = inference.load(study_run(self.folder, CE_RUN, cell), "best")
        paths = tables.read_eval_table(
            train_csv, ce.config.data.image_dir, num_classes=len(ce.class_names)
        ).paths
        pixels = images.load_images(paths, ce.input_size)

        scores = {}
        for method, detector in LAMBDA_RUNS.items():
            _, lam, _ = lambda_inspect.read_lambdas(study_run(self.folder, method, cell))
            scores[detector] = {**detection(1.0 - lam, flipped), "runs": 1}
        probs = ce.probabilities(pixels)
        loss = -np.log(np.maximum(probs[np.arange(len(given)), given], 1e-12))
        scores[CE_LOSS] = {**detection(loss, flipped), "runs": 1}

        fold = fold_of_rows(given, self.folds, self.args.data_seed, cell["seed"])
        oof = np.zeros_like(probs)
        for held_out in range(self.folds):
            model = inference.load(self.fold_workdir(cell, held_out), "best")
            oof[fold == held_out] = model.probabilities(pixels[fold == held_out])
        scores[CLEANLAB.format(k=self.folds)] = {
            **cleanlab_detection(given, oof, flipped),
            "runs": self.folds,
        }
        data_digest = self.run_record(cell)["train_csv_sha256"]
        for figures in scores.values():
            figures["num_flipped"] = int(flipped.sum())
            figures[DATA_DIGEST] = data_digest
        return scores

    def run_record(self, cell: dict) -> dict:
        """The noise study's record of the `ce` run of `cell` (STUDY/results.json)."""
        record = json.loads((self.folder / "results.json").read_text())
        return record[noise_study.run_name(CE_RUN, cell["noise"], cell["mode"], cell["seed"])]


def run(args) -> dict[str, dict]:
    """Trains the missing fold runs, then scores every cell the record lacks; returns cell
    name -> scores. Cells already in the record (STUDY/detectors/results.json, which may have
    been carried from another machine) need neither their runs nor cleanlab."""
    study = Study(args)
    results_path = study.folder / "detectors" / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    todo = [cell for cell in cells(args) if cell_name(cell) not in results]
    missing = missing_runs(study.folder, todo)
    if missing:
        raise SystemExit(
            f"{study.folder} lacks {len(missing)} finished run(s) this study reads: "
            f"{', '.join(missing)}. Train them with the study's own command and "
            f"--methods={CE_RUN},{','.join(LAMBDA_RUNS)} --no-alternatives "
            "--noise=... --modes=... --seeds=... (docs/EXPERIMENTS.md)"
        )
    if todo:
        try:
            import cleanlab  # noqa: F401
        except ImportError:
            raise SystemExit(
                "cleanlab is not installed: pip install -r tools/requirements-study.txt"
            ) from None
    # Fold CSVs are written here, never by two workers at once.
    folds = {
        study.fold_workdir(cell, held_out): study.fold_overrides(cell, held_out)
        for cell in todo
        for held_out in range(args.folds)
    }
    folds = {w: o for w, o in folds.items() if not (w / "eval_results.json").exists()}
    print(f"{len(todo)} cells to score, {len(folds)} fold runs to train", flush=True)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(study.train_fold, *fold) for fold in folds.items()]:
            future.result()
    for cell in todo:
        results[cell_name(cell)] = study.score(cell)
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(results, indent=1))
        print(f"scored {cell_name(cell)}", flush=True)
    return {cell_name(cell): results[cell_name(cell)] for cell in cells(args)}


def summarize(results: dict[str, dict], cell_list: list[dict]) -> pd.DataFrame:
    """One row per (noise, mode, detector): mean and std over seeds of every figure."""
    rows = [
        {"noise": cell["noise"], "mode": cell["mode"], "detector": detector, **figures}
        for cell in cell_list
        for detector, figures in results[cell_name(cell)].items()
    ]
    frame = pd.DataFrame(rows)
    keys = ["noise", "mode", "detector"]
    grouped = frame.groupby(keys, sort=False)
    summary = grouped.mean(numeric_only=True).add_suffix("_mean")
    summary = summary.join(grouped.std(numeric_only=True).add_suffix("_std"))
    summary["seeds"] = grouped.size()
    return summary.reset_index()


def _figure(row, name: str, digits: int = 3) -> str:
    mean, std = row[f"{name}_mean"], row[f"{name}_std"]
    if np.isnan(mean):
        return ""
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def markdown_table(summary: pd.DataFrame) -> str:
    lines = [
        "| noise | flips | detector | training runs | precision@k | AUROC | flagged "
        "(of flipped) | flagged precision | flagged recall | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, row in summary.iterrows():
        flagged = (
            f"{_figure(row, 'flagged', 0)} (of {row['num_flipped_mean']:.0f})"
            if "flagged_mean" in row and not np.isnan(row["flagged_mean"])
            else ""
        )
        lines.append(
            f"| {row['noise']:.0%} | {row['mode']} | {row['detector']} | "
            f"{row['runs_mean']:.0f} | {_figure(row, 'precision_at_k')} | "
            f"{_figure(row, 'auroc')} | {flagged} | "
            f"{_figure(row, 'flagged_precision') if 'flagged_precision_mean' in row else ''} | "
            f"{_figure(row, 'flagged_recall') if 'flagged_recall_mean' in row else ''} | "
            f"{row['seeds']} |"
        )
    return "\n".join(lines)


def data_digests(results: dict[str, dict], cell_list: list[dict]) -> str:
    """Which training data the cells' runs read: one sentence, or one line per digest where
    cells were scored on different data (e.g. VA from a regressor retrained elsewhere)."""
    cells_of: dict[str, list[str]] = {}
    for cell in cell_list:
        figures = next(iter(results[cell_name(cell)].values()))
        cells_of.setdefault(figures.get(DATA_DIGEST, "not recorded"), []).append(cell_name(cell))
    if len(cells_of) == 1 and "not recorded" not in cells_of:
        return (
            f"Every cell's runs read the training data with SHA-256 `{next(iter(cells_of))}` "
            "(the clean training CSV, VA and neighbours included)."
        )
    lines = ["The cells' runs read different training data (SHA-256 of the clean training CSV):"]
    lines += [f"- `{digest}`: {', '.join(names)}" for digest, names in cells_of.items()]
    return "\n".join(lines)


def write_report(args, results: dict[str, dict]) -> None:
    settings = json.loads((pathlib.Path(args.study) / "study.json").read_text())
    role = (
        "a tuning set"
        if settings["data_seed"] in noise_study.TUNING_DATA_SEEDS
        else "a **confirmation** set, run once"
    )
    summary = summarize(results, cells(args))
    text = f"""# Noisy-label detectors: λ against cleanlab and the cross-entropy loss

Generated by

```
{" ".join(["python tools/detector_study.py", *args.argv])}
```

On the noise study in `{args.study}` (data seed {settings["data_seed"]}, {role}; its data,
VA neighbours and runs are described in its own report). Every detector ranks the same
training rows of each (noise level, flip mode, seed); "training runs" is what it costs.
precision@k is the share of flipped rows among the k most suspect (k = the number of flipped
rows, which no detector is told), AUROC over all training rows; "flagged" is the set cleanlab's
`find_label_issues` would drop. Mean ± std over seeds. The detectors are described in
`tools/detector_study.py`.

{data_digests(results, cells(args))}

{markdown_table(summary)}
"""
    path = pathlib.Path(args.results or pathlib.Path(args.study) / "detectors" / "RESULTS.md")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--study", required=True, help="A noise study's --out folder.")
    parser.add_argument("--noise", type=noise_study._floats, default=[0.1, 0.2, 0.3])
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["proportional", "uniform"])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=4, help="cleanlab's cross-validation folds.")
    parser.add_argument("--jobs", type=int, default=2, help="Fold runs trained at once.")
    parser.add_argument(
        "--results", help="The Markdown report (default STUDY/detectors/RESULTS.md)."
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    if 0 in args.noise:
        raise SystemExit("--noise: a detector needs flipped rows; 0 is not a noise level here")
    if args.folds < 2:
        raise SystemExit("--folds: out-of-fold probabilities need at least 2 folds")
    results = run(args)
    write_report(args, results)
    print(markdown_table(summarize(results, cells(args))))


if __name__ == "__main__":
    main()
