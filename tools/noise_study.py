"""Noisy-label study: LDLVA against baselines that see the same information, over noise levels.

  python tools/noise_study.py --help   # the committed commands are in docs/EXPERIMENTS.md

Generates a RAF-DB-balanced synthetic set (`--data_seed`); per (noise level, flip mode, seed)
flips its training labels (`tools/make_noisy_labels.py`, seeded by data seed and seed) and
carves a validation split from the *noisy* labels (the same rows for every method,
`tools/noise_splits.py`); trains every method on every copy (`configs/synthetic.py`'s model
and schedule unless overridden), picks each run's checkpoint on that noisy validation split and
evaluates both the picked and the final checkpoint on the clean test set. `--va_regressor`
takes the training rows' valence and arousal from a VA regressor's predictions, as on RAF-DB.
By default every run starts from random weights; `--pretrain_epochs=N` starts every run from a
pre-trained backbone instead, as the paper does: N epochs of cross-entropy on a disjoint clean
synthetic set, trained once per study. Writes `OUT/results.json`, `--results` (Markdown tables,
`tools/noise_report.py`; default OUT/RESULTS.md) and `--plot` (default OUT/noise_study.png): the
committed reports under docs/ are written only when named. Finished runs are skipped, so an
interrupted study continues where it stopped; a run interrupted half-way resumes from its own
checkpoint.

Methods: `METHODS` below. `--methods` run at every noise level and flip mode; `--ablations`
only at `--ablation_noise` (proportional flips), to keep the study short. Data seeds in
`TUNING_DATA_SEEDS` were looked at while choosing the method; a study on any other is marked a
confirmation in its report.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np
import pandas as pd

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools import noise_report, noise_splits  # noqa: E402


class Method(NamedTuple):
    variant: str  # the method's variant in configs/default.py:METHOD_VARIANTS
    overrides: dict  # config overrides on top of `--config` with that variant
    description: str  # how the report describes it
    relabel: bool = False  # trains on the VA-neighbour vote of the noisy labels
    # Other settings tried beside `overrides` (each a dict on top of them): the study trains
    # every candidate and reports, per cell and seed, the one that the noisy validation split
    # picks, so that every method gets the same chance to fit the data's noise level.
    alternatives: tuple[dict, ...] = ()


# Plain cross-entropy in the LDLVA step: lambda pinned at 1 (targets = labels), no centre loss.
CE = {"gamma": 0.0, "lamb_init": 30.0, "lamb_lr": 0.0}
# The level of lambda LDLVA's candidates try beside lamb_init 0.5 (lambda 0.62): 0.82.
HIGH_LAMBDA = {"lamb_init": 1.5}

METHODS = {
    "ce": Method("reference", CE, "plain cross-entropy (λ fixed at 1, no centre loss)"),
    "label_smoothing": Method(
        "reference",
        {**CE, "label_smoothing": 0.1},
        "cross-entropy with label smoothing 0.1 (candidate: 0.3)",
        alternatives=({"label_smoothing": 0.3},),
    ),
    "gce": Method(
        "reference",
        {**CE, "loss": "gce"},
        "the generalised cross-entropy (Zhang & Sabuncu 2018), a noise-robust loss, q = 0.7 "
        "(candidate: 0.4)",
        alternatives=({"gce_q": 0.4},),
    ),
    "knn_relabel": Method(
        "reference",
        CE,
        "cross-entropy on relabelled rows: each row's label replaced by the majority vote of "
        "its own and its K = 8 VA neighbours' labels (candidate: K = 4), the same VA "
        "information LDLVA reads",
        relabel=True,
        alternatives=({"num_neighbors": 4},),
    ),
    "ldlva_reference": Method(
        "reference",
        {},
        "LDLVA as the reference runs it (λ free per row, `lamb_lr` 10, q from the neighbours' "
        "predictions, no prior correction; candidate: `lamb_init` 1.5)",
        alternatives=(HIGH_LAMBDA,),
    ),
    "ldlva": Method(
        "ldl_jax",
        {},
        "LDLVA with ldl_jax's deviations, `configs/synthetic.py:ldl_jax` (each class keeps a "
        "mean λ set by how much its rows' VA neighbours agree; each neighbour brings its label, "
        "weighted by its λ, and its prediction into q; the prior correction at evaluation; "
        "candidate: `lamb_init` 1.5)",
        alternatives=(HIGH_LAMBDA,),
    ),
    "ldlva_relabelled": Method(
        "ldl_jax",
        {},
        "`ldlva` trained on `knn_relabel`'s voted labels (K = 8)",
        relabel=True,
    ),
    "ldlva_uncorrected": Method(
        "ldl_jax",
        {"prior_correction": False},
        "`ldlva` without the prior correction (the logits as trained)",
    ),
    "ldlva_bank": Method(
        "ldl_jax",
        {"neighbors": "memory_bank"},
        "`ldlva` with the neighbour memory bank (the neighbours' last central pass instead of "
        "a forward pass on their images)",
    ),
    "ldlva_init_mean": Method(
        "ldl_jax",
        {"lamb_class_mean": "lamb_init"},
        "`ldlva` with every class's mean λ at `lamb_init`",
    ),
    "ldlva_prediction": Method(
        "ldl_jax",
        {"neighbor_distribution": "prediction"},
        "`ldlva` with q made of the neighbours' predictions alone, as in the reference",
    ),
}


def candidates(method: str, alternatives: bool = True) -> list[tuple[str, dict]]:
    """(label, overrides) of each setting a method is trained with: "" for its own, then
    "+FIELD=VALUE" for each alternative (with `alternatives`)."""
    own = METHODS[method]
    found = [("", own.overrides)]
    for extra in own.alternatives if alternatives else ():
        label = "+" + ",".join(f"{key}={value}" for key, value in extra.items())
        found.append((label, {**own.overrides, **extra}))
    return found


# Methods whose lambda is learned: their noise-detection figures are reported.
LEARNS_LAMBDA = tuple(name for name, m in METHODS.items() if m.overrides.get("lamb_lr") != 0.0)
# Data seeds whose sets were looked at while the method and its defaults were chosen; any
# other data seed is a confirmation set, run once after the defaults are frozen.
TUNING_DATA_SEEDS = (0, 1, 2, 3)


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
            if (method, noise, "proportional") not in cells:
                cells.append((method, noise, "proportional"))
    runs = []
    for seed in args.seeds:
        for method, noise, mode in cells:
            mode = mode if noise > 0 else "clean"
            for label, _ in candidates(method, args.alternatives):
                runs.append(
                    {
                        "name": run_name(method + label, noise, mode, seed),
                        "method": method,
                        "candidate": label,
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
    "val_fraction",
    "val_every_steps",
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
            num_neighbors=noise_splits.NUM_NEIGHBORS_WRITTEN,
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


def train_csv_digest(args, data: pathlib.Path) -> str:
    """SHA-256 of the clean training CSV every run's labels, VA and neighbours come from."""
    return hashlib.sha256(clean_train_csv(args, data).read_bytes()).hexdigest()


def backbone_digest(pretrained: str) -> str:
    """SHA-256 of the pre-trained backbone's weights every run starts from ("" from scratch)."""
    if not pretrained:
        return ""
    import jax

    from ldl_jax import inference

    _, backbone, _ = inference.read_backbone(pretrained)
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(backbone)[0]:
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()


# What every run of a study read, named in each run's record: field -> what a mismatch means.
PROVENANCE = {
    "train_csv_sha256": "read other training data",
    "backbone_sha256": "started from another pre-trained backbone",
}


def check_provenance(results: dict[str, dict], provenance: dict, source: pathlib.Path) -> None:
    """Refuses to add runs to a record whose runs read other data or started elsewhere.

    A record carried to another machine (OUT/results.json) continues only where the data
    regenerated there (the regressor's VA included) and the backbone pre-trained there are,
    byte for byte, the ones its runs read.
    """
    for field, digest in provenance.items():
        other = [
            f"{name} ({result.get(field, 'none recorded')[:16] or 'from scratch'})"
            for name, result in results.items()
            if result.get(field) != digest
        ]
        if other:
            raise SystemExit(
                f"{source}: {len(other)} finished run(s) {PROVENANCE[field]} than this "
                f"machine made (SHA-256 {digest[:16] or 'none: from scratch'}): "
                + ", ".join(other[:5])
                + (" ..." if len(other) > 5 else "")
                + "; regenerate the same one (the same study command) or use another --out"
            )


def split_name(run: dict) -> str:
    """The folder under OUT/data/splits of a run's (noise, mode, seed): 'clean' (one for every
    seed) or e.g. 'proportional30_s0'."""
    level = int(round(run["noise"] * 100))
    return "clean" if level == 0 else f"{run['mode']}{level}_s{run['seed']}"


def run_data(args, data: pathlib.Path, run: dict, num_voters: int) -> dict[str, pathlib.Path]:
    """The run's training and validation CSVs, written once per (noise, mode, seed) under
    OUT/data/splits and shared by every method (the relabelling baseline's training CSV too)."""
    folder = data / "splits" / split_name(run)
    paths = {
        "train": folder / "train.csv",
        "val": folder / "val.csv",
        "relabelled": folder / f"train_knn_vote{num_voters}.csv",
    }
    if not (paths["train"].exists() and paths["val"].exists()):
        clean = clean_train_csv(args, data)
        labels = pd.read_csv(clean)["expression"].to_numpy()
        noisy = noise_splits.noisy_labels(
            labels, run["noise"], run["mode"], args.data_seed, run["seed"]
        )
        held_out = noise_splits.val_rows(len(labels), args.val_fraction, args.data_seed)
        train, val = noise_splits.split_noisy_table(clean, noisy, held_out)
        noise_splits.write_csv(val, paths["val"])
        noise_splits.write_csv(train, paths["train"])
    if not paths["relabelled"].exists():
        train = pd.read_csv(paths["train"])
        voted = noise_splits.vote_labels(
            train["expression"].to_numpy(), noise_splits.parse_knn(train), num_voters
        )
        noise_splits.write_csv(
            train.assign(expression_given=train["expression"], expression=voted),
            paths["relabelled"],
        )
    return paths


def run_overrides(args, data: pathlib.Path, run: dict, pretrained: str) -> dict:
    """Config overrides (dotted name -> value) of one run, on top of `--config` with its
    method's variant."""
    method = METHODS[run["method"]]
    own = dict(candidates(run["method"]))[run["candidate"]]
    sets = _parse_sets(args.set)
    num_voters = _load_config(args.config, method.variant, {**own, **sets}).num_neighbors
    paths = run_data(args, data, run, num_voters)
    overrides = {
        "model.pretrained": pretrained,
        "data.synthetic.dir": str(data / "clean"),  # exists: nothing is generated
        "data.image_dir": str(data / "clean" / "images"),
        "data.train_csv": str(paths["relabelled" if method.relabel else "train"]),
        "data.val_csv": str(paths["val"]),
        "data.test_csv": str(data / "clean" / "test.csv"),
        "val_interval": args.val_every_steps,
        "seed": run["seed"],
    }
    overrides.update(own)
    overrides.update(sets)
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


def _load_config(path: str, variant: str, overrides: dict):
    """The config of file `path` with the method `variant`, as `--config=PATH:VARIANT` reads it,
    and `overrides` applied."""
    spec = importlib.util.spec_from_file_location("study_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(variant)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


def train_one(
    args, workdir: pathlib.Path, variant: str, overrides: dict, evaluate_best: bool = True
) -> None:
    """Trains one run in `workdir`, then evaluates its checkpoint picked on the validation
    split (WORKDIR/eval/best-STEP/): in this process (--jobs=1) or in child processes."""
    if args.jobs == 1:
        from ldl_jax import train

        config = _load_config(args.config, variant, overrides)
        train.train_and_evaluate(config, workdir)
        if evaluate_best:
            train.evaluate_checkpoint(config, workdir, "best")
        return
    command = [sys.executable, "-m", "ldl_jax.main", f"--config={args.config}:{variant}"]
    command += [f"--workdir={workdir}"] + [_flag(k, v) for k, v in overrides.items()]
    commands = [command] + ([command + ["--mode=eval", "--checkpoint=best"]] * evaluate_best)
    log = pathlib.Path(args.out) / "logs" / f"{workdir.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(pathlib.Path(args.out) / "xla_cache"))
    with open(log, "w") as out:
        for step in commands:
            finished = subprocess.run(
                step, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT
            )
            if finished.returncode:
                raise RuntimeError(
                    f"run {workdir.name} failed (exit {finished.returncode}); see {log}"
                )


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
            num_neighbors=noise_splits.NUM_NEIGHBORS_WRITTEN,
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
        **CE,
    }
    overrides.update(_parse_sets(args.set))
    print(f"pre-training the backbone for {epochs} epochs in {workdir}", flush=True)
    train_one(args, workdir, "reference", overrides, evaluate_best=False)
    return str(workdir)


def _test_metrics(results_file: pathlib.Path) -> dict:
    test = json.loads(results_file.read_text())["test"]
    return {
        "accuracy": test["accuracy"],
        "balanced_accuracy": test["balanced_accuracy"],
        "per_class_accuracy": test["per_class_accuracy"],
        "step": test["step"],
    }


def measure(args, run: dict, overrides: dict) -> dict:
    """A finished run's test figures at its final and at its picked (best noisy-validation)
    checkpoint; for learned lambda under noise, lambda's detection of the flipped rows; for the
    relabelling baseline, how many of its training labels the vote got right."""
    from ldl_jax import inspect as lambda_inspect

    workdir = pathlib.Path(args.out) / "runs" / run["name"]
    final = _test_metrics(workdir / "eval_results.json")
    [picked_file] = sorted(workdir.glob("eval/best-*/eval_results.json"))
    picked = _test_metrics(picked_file)
    val = json.loads((workdir / "eval_results.json").read_text())["val_summary"]
    result = {
        **run,
        **{f"final_{k}": v for k, v in final.items()},
        **{f"picked_{k}": v for k, v in picked.items()},
        "picked_val_accuracy": val["best_accuracy"],
    }
    frame = pd.read_csv(overrides["data.train_csv"])
    if run["method"] in LEARNS_LAMBDA and run["noise"] > 0:
        _, lam, _ = lambda_inspect.read_lambdas(workdir)
        result.update(
            lambda_inspect.noise_detection(
                lam, frame["expression"].to_numpy(), frame["expression_backup"].to_numpy()
            )
        )
    if METHODS[run["method"]].relabel:
        result["relabelled_correct"] = float(
            (frame["expression"] == frame["expression_backup"]).mean()
        )
        result["given_correct"] = float(
            (frame["expression_given"] == frame["expression_backup"]).mean()
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
    provenance = {"train_csv_sha256": train_csv_digest(args, data)}
    check_provenance(results, provenance, results_path)  # before any pre-training
    pretrained = pretrain(args)
    provenance["backbone_sha256"] = backbone_digest(pretrained)
    check_provenance(results, provenance, results_path)
    runs = plan(args)
    todo = [run for run in runs if run["name"] not in results]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already finished", flush=True)
    started = time.time()
    # Split CSVs are written here, never by two workers at once.
    jobs = {run["name"]: run_overrides(args, data, run, pretrained) for run in todo}

    def finish(run):
        results[run["name"]] = {**measure(args, run, jobs[run["name"]]), **provenance}
        results_path.with_suffix(".tmp").write_text(json.dumps(results, indent=1))
        results_path.with_suffix(".tmp").replace(results_path)
        remaining = sum(r["name"] not in results for r in runs)
        done = len(runs) - remaining
        elapsed = time.time() - started
        per_run = elapsed / max(1, len(todo) - remaining)
        r = results[run["name"]]
        print(
            f"[{done}/{len(runs)}] {run['name']}: test picked {r['picked_accuracy']:.4f} "
            f"(balanced {r['picked_balanced_accuracy']:.4f}), final {r['final_accuracy']:.4f}"
            + (f", lambda precision@k {r['precision_at_k']:.3f}" if "precision_at_k" in r else "")
            + f" | {elapsed / 60:.1f} min, ~{remaining * per_run / 60:.0f} min left",
            flush=True,
        )

    runs_dir = out / "runs"

    def train(run):
        variant = METHODS[run["method"]].variant
        train_one(args, runs_dir / run["name"], variant, jobs[run["name"]])

    if args.jobs == 1:
        for run in todo:
            train(run)
            finish(run)
    else:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(train, run): run for run in todo}
            for future in concurrent.futures.as_completed(futures):
                future.result()
                finish(futures[future])
    return {run["name"]: results[run["name"]] for run in runs}


def describe(args) -> dict:
    """What the report says of the study's data, neighbours and start."""
    data = pathlib.Path(args.out) / "data"
    config = _load_config(args.config, "reference", _parse_sets(args.set))
    clean = pd.read_csv(clean_train_csv(args, data))
    return {
        "command": " ".join(["python tools/noise_study.py", *args.argv]),
        "config": args.config,
        "sets": args.set,
        "data_seed": args.data_seed,
        "confirmation": args.data_seed not in TUNING_DATA_SEEDS,
        "num_train": args.num_train,
        "num_test": args.num_test,
        "image_size": args.image_size,
        "val_fraction": args.val_fraction,
        "val_every_steps": args.val_every_steps,
        "num_neighbors": config.num_neighbors,
        "purity": noise_splits.neighbor_label_purity(clean, config.num_neighbors),
        "train_csv_sha256": train_csv_digest(args, data),
        "va_regressor": args.va_regressor,
        "pretrain_epochs": args.pretrain_epochs,
        "pretrain_num_train": args.pretrain_num_train,
        "pretrain_data_seed": args.pretrain_data_seed,
        "methods": {
            name: METHODS[name].description
            for name in dict.fromkeys([*args.methods, *args.ablations])
        },
        "alternatives": args.alternatives,
    }


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
    parser.add_argument(
        "--methods",
        type=_names,
        default=["ce", "label_smoothing", "gce", "knn_relabel", "ldlva_reference", "ldlva"],
    )
    parser.add_argument("--noise", type=_floats, default=[0.0, 0.1, 0.2, 0.3])
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["proportional"])
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--ablations", type=_names, default=[])
    parser.add_argument(
        "--alternatives",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Also train each method's candidate settings (Method.alternatives) and report the "
        "one the noisy validation split picks; --no-alternatives: each method's own only.",
    )
    parser.add_argument("--ablation_noise", type=_floats, default=[0.0, 0.3])
    parser.add_argument("--data_seed", type=int, default=0)
    parser.add_argument("--num_train", type=int, default=3000)
    parser.add_argument("--num_test", type=int, default=700)
    parser.add_argument("--image_size", type=int, default=48)
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.1,
        help="Share of the training rows held out, with their noisy labels, to pick checkpoints.",
    )
    parser.add_argument(
        "--val_every_steps", type=int, default=100, help="Validation (and best-checkpoint) period."
    )
    parser.add_argument(
        "--pretrain_epochs",
        type=int,
        default=0,
        help="Epochs of cross-entropy pre-training on a disjoint clean set; 0: from scratch.",
    )
    parser.add_argument("--pretrain_num_train", type=int, default=4000)
    parser.add_argument("--pretrain_data_seed", type=int, default=7)
    parser.add_argument(
        "--va_regressor",
        default="",
        help="A VA regressor's workdir (config.task 'va'): the training rows' valence, arousal "
        "and VA neighbours come from its predictions (ldl_jax.annotate_va), as on RAF-DB, "
        "instead of the generator's true values.",
    )
    parser.add_argument(
        "--set", action="append", default=[], help="Config override for every run, KEY=VALUE."
    )
    parser.add_argument("--jobs", type=int, default=2, help="Runs trained at once.")
    parser.add_argument("--results", help="The Markdown report (default OUT/RESULTS.md).")
    parser.add_argument("--plot", help="The accuracy figure (default OUT/noise_study.png).")
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    for mode in args.modes:
        if mode not in ("proportional", "uniform"):
            raise SystemExit(f"--modes: unknown flip mode {mode!r}")
    results = run_study(args)
    out = pathlib.Path(args.out)
    results_path, plot_path = (
        args.results or out / "RESULTS.md",
        args.plot or out / "noise_study.png",
    )
    noise_report.write_report(describe(args), results, results_path, plot_path)
    print(noise_report.markdown_table(noise_report.summarize(results)))


if __name__ == "__main__":
    main()
