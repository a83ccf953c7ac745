"""The training loop: validate, restore, train, evaluate, checkpoint (docs/METHOD.md §4, §5).

`train_and_evaluate(config, workdir)` runs or resumes a training run in `workdir`;
`evaluate_checkpoint(config, workdir, checkpoint)` evaluates a saved one. The data comes from
`ldl_jax.data` (validated before any image is decoded or anything in the workdir is written),
the restored model from `ldl_jax.inference.restore_variables`.
"""

import json
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from ldl_jax import (
    checkpointing,
    config_checks,
    console,
    data,
    evaluation,
    inference,
    memory_bank,
    models,
    parallel,
)
from ldl_jax.train_state import create_optimizer, create_train_state

EVAL_RESULTS_FILE = "eval_results.json"
RECENT_EVALS = 5  # docs/METHOD.md §5: report the mean of the last 5 validation evaluations


def _evaluate_set(
    config, parallelism, eval_step, probabilities, variables, eval_set
) -> dict[str, Any]:
    """Evaluates one `data.EvalSet` with {'params', 'batch_stats'} = `variables`; each process
    feeds its slice of every padded global batch. A set with crowd distributions also gets
    `ldl_measures` (`evaluation.distribution_measures` with `probabilities`)."""
    batch_size = config.eval_batch_size
    with console.Progress(
        f"eval {eval_set.name}",
        -(-eval_set.num_rows // batch_size),
        unit="batch",
        scale=batch_size,
        scaled_unit="img",
        leave=False,
    ) as progress:
        batches = progress.iterate(eval_set.batches(batch_size))
        placed = (parallelism.place_batch(b) for b in batches)
        metrics = evaluation.evaluate(
            eval_step, variables["params"], variables["batch_stats"], placed
        )
    crowd = eval_set.table.distributions
    if crowd is not None:
        metrics["ldl_measures"] = evaluation.distribution_measures(
            probabilities, variables, eval_set.images, crowd, config.eval_batch_size
        )
    return metrics


def table_row(metrics: dict[str, Any]) -> dict[str, str]:
    """A set's row of the console's results table."""
    return {
        "accuracy": console.percent(metrics["accuracy"]),
        "balanced": console.percent(metrics["balanced_accuracy"]),
        "images": str(metrics["num_examples"]),
        "step": str(metrics["step"]),
    }


def _variables(state) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def _write_json(path: pathlib.Path, value) -> None:
    """Writes via a temporary file, so a crash never leaves a truncated file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    temporary.replace(path)


def _write_eval_scalars(writer, step: int, name: str, metrics: dict[str, Any]) -> None:
    scalars = {
        f"{name}/accuracy": metrics["accuracy"],
        f"{name}/balanced_accuracy": metrics["balanced_accuracy"],
    }
    for measure, value in metrics.get("ldl_measures", {}).items():
        scalars[f"{name}/ldl/{measure}"] = value
    writer.write_scalars(step, scalars)


class _MetricBuffer:
    """Per-step train metrics kept on the device until the next log, then checked and averaged.

    Fetching only at log time keeps the host from waiting on every step; checking every
    buffered step names the first one whose loss was not finite.
    """

    def __init__(self):
        self.entries: list[tuple[int, dict]] = []

    def append(self, step: int, metrics) -> None:
        self.entries.append((step, metrics))

    def flush(self) -> dict[str, float] | None:
        if not self.entries:
            return None
        fetched = jax.device_get([metrics for _, metrics in self.entries])
        for (step, _), metrics in zip(self.entries, fetched, strict=True):
            if not np.isfinite(metrics["loss"]):
                raise FloatingPointError(
                    f"non-finite loss at step {step}: "
                    + ", ".join(f"{k}={float(v):.4g}" for k, v in metrics.items())
                    + ". The last checkpoint before it is kept."
                )
        self.entries = []
        return {f"train/{name}": float(np.mean([m[name] for m in fetched])) for name in fetched[0]}


def open_run(config, workdir, state, parallelism, train_data, new_meta: dict):
    """Opens a run's workdir: checks its checkpoints' signature, resumes from the newest one
    that reads back (`Checkpoints.resume`), decodes `train_data` (a `data.TrainData`), writes
    config.json and logs the parameters. Nothing is written before the images decode, so a
    corrupt image leaves the workdir as it was.

    Returns (state, meta, checkpoints, writer); `meta` is `new_meta` plus the signature for a
    new run, the checkpoint's meta for a resumed one.
    """
    checkpoints = checkpointing.Checkpoints(workdir)
    signature = checkpointing.model_signature(config, train_data.num_rows)
    checkpoints.check_signature(signature)
    meta = {"signature": signature, **new_meta}
    resumed = checkpoints.resume(parallelism.checkpoint_target(state))
    if resumed is not None:
        state, meta = resumed
        logging.info("Resumed from step %d", int(state.step))

    train_data.decode(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    console.open_log_file(workdir / run_log_name("train"))
    if jax.process_index() == 0:
        _write_json(workdir / "config.json", json.loads(config.to_json_best_effort()))
    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=False
    )
    parameter_overview.log_parameter_overview(state.params)  # to the log file
    logging.info(
        "%s parameters; the full log goes to %s",
        f"{parameter_overview.count_parameters(state.params):,}",
        console.shown_path(workdir / run_log_name("train")),
    )
    return state, meta, checkpoints, writer


def run_log_name(kind: str) -> str:
    """`train.log` or `eval.log`; `train.process1.log`, ... for the other processes."""
    index = jax.process_index()
    return f"{kind}.log" if index == 0 else f"{kind}.process{index}.log"


def show_summary(rows: dict[str, dict[str, str]], best: str | None, workdir, started) -> None:
    """The console's end of a training run: the results table (set -> `table_row`), the time
    taken, the best validation (`best`, a phrase) and where the outputs are."""
    if rows:
        console.show(console.table(rows))
    lines = [f"Done in {console.duration(time.monotonic() - started)}."]
    if best is not None:
        lines.append(f"Best val {best} (checkpoint 'best').")
    shown = console.shown_path(workdir)
    lines.append(
        f"Outputs in {shown}: {EVAL_RESULTS_FILE}, checkpoints/, {run_log_name('train')}; "
        f"TensorBoard: tensorboard --logdir {shown}"
    )
    console.show("\n".join(lines))


def train_and_evaluate(config, workdir) -> dict[str, Any]:
    """Trains (or resumes) in `workdir`; returns the final evaluation results."""
    started = time.monotonic()
    train_data = data.open_train_data(config)
    workdir = data.resolve(workdir)
    steps_per_epoch = train_data.steps_per_epoch
    num_train_steps = train_data.num_train_steps
    class_weights = train_data.class_weights
    table = train_data.table

    parallelism = parallel.create(config)
    model = models.create_model(config, bn_axis_name=parallelism.bn_axis_name)
    tx = create_optimizer(config, steps_per_epoch)
    state = create_train_state(config, model, tx, table.num_rows)
    state, meta, checkpoints, writer = open_run(
        config,
        workdir,
        state,
        parallelism,
        train_data,
        {"best_val_accuracy": None, "val_history": []},
    )
    if memory_bank.uses_bank(config) and int(state.step) == 0:  # a fresh run (not resumed)
        state = memory_bank.fill(state, model, train_data.images, config.eval_batch_size)
    eval_sets = train_data.eval_sets
    feed = train_data.feed(parallelism)
    train_step = parallelism.compile_train_step(
        model,
        tx,
        config,
        class_weights,
        train_labels=table.labels,
        train_neighbors=table.knn,
        input_images=feed.input_images,
    )
    eval_step = parallelism.compile_eval_step(model, config.num_classes)
    probabilities = evaluation.compile_probabilities(model)

    start_step = int(state.step)
    state = parallelism.place_state(state)
    batches = feed.batches(start_step)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=num_train_steps, writer=writer
    )
    train_metrics = _MetricBuffer()
    results = {}  # per set: the latest evaluation
    progress = console.Progress(
        "train",
        num_train_steps,
        unit="step",
        initial=start_step,
        scale=config.batch_size,
        scaled_unit="img",
    )

    def log_train_metrics(step):
        summary = train_metrics.flush()
        if summary is not None:
            writer.write_scalars(step, summary)
            progress.set(loss=f"{summary['train/loss']:.3f}")

    def synced_host_state():
        nonlocal state
        log_train_metrics(step)  # never evaluate or save a state after a non-finite loss
        state = parallelism.sync_batch_stats(state)
        return parallelism.host_state(state)

    with progress:
        for step in range(start_step + 1, num_train_steps + 1):
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, metrics = train_step(state, next(batches))
            train_metrics.append(step, metrics)
            report_progress(step)
            progress.update()
            is_last = step == num_train_steps
            if step % config.log_every_steps == 0 or is_last:
                log_train_metrics(step)
            if "val" in eval_sets and (step % config.val_interval == 0 or is_last):
                host_state = synced_host_state()
                val = _evaluate_set(
                    config,
                    parallelism,
                    eval_step,
                    probabilities,
                    _variables(host_state),
                    eval_sets["val"],
                )
                results["val"] = {**val, "step": step}
                _write_eval_scalars(writer, step, "val", val)
                meta["val_history"].append({"step": step, "accuracy": val["accuracy"]})
                best = meta["best_val_accuracy"]
                is_best = best is None or val["accuracy"] > best
                console.show(
                    f"step {step}/{num_train_steps}: val accuracy "
                    f"{console.percent(val['accuracy'])}, balanced "
                    f"{console.percent(val['balanced_accuracy'])}"
                    + (" (best so far)" if is_best else "")
                )
                if is_best:
                    meta["best_val_accuracy"] = val["accuracy"]
                    checkpoints.save(
                        host_state, meta, checkpointing.BEST, metrics={"accuracy": val["accuracy"]}
                    )
            end_of_epoch = step % steps_per_epoch == 0
            if is_last or (end_of_epoch and (step // steps_per_epoch) % config.save_interval == 0):
                checkpoints.save(synced_host_state(), meta)

    step = num_train_steps
    host_state = synced_host_state()
    for name, eval_set in eval_sets.items():
        if results.get(name, {}).get("step") == step:
            continue  # evaluated at this very step in the loop
        results[name] = _evaluate_set(
            config, parallelism, eval_step, probabilities, _variables(host_state), eval_set
        )
        results[name]["step"] = int(host_state.step)
        _write_eval_scalars(writer, int(host_state.step), name, results[name])
    if meta["val_history"]:
        recent = [entry["accuracy"] for entry in meta["val_history"][-RECENT_EVALS:]]
        results["val_summary"] = {
            "best_accuracy": meta["best_val_accuracy"],
            f"mean_of_last_{RECENT_EVALS}": float(np.mean(recent)),
            "history": meta["val_history"],
        }
    if jax.process_index() == 0:
        _write_json(workdir / EVAL_RESULTS_FILE, results)
    writer.flush()
    checkpoints.wait_until_finished()
    checkpoints.close()
    best = None
    if meta["val_history"]:
        best_entry = max(meta["val_history"], key=lambda entry: entry["accuracy"])  # the first
        best = f"accuracy {console.percent(best_entry['accuracy'])} at step {best_entry['step']}"
    show_summary({name: table_row(results[name]) for name in eval_sets}, best, workdir, started)
    return results


def evaluate_checkpoint(config, workdir, checkpoint: str = "latest") -> dict[str, Any]:
    """Evaluates the latest, best or a given step's checkpoint on every configured set.

    The sets are `val` and `test` of config.data and the named sets of `config.eval_sets`.
    Results go to WORKDIR/eval/CHECKPOINT-STEP/: `eval_results.json`, a confusion-matrix PNG per
    set and TensorBoard scalars.

    Args:
      config: the run's config (data paths may point at other test sets).
      workdir: the training run's workdir.
      checkpoint: 'latest', 'best' or a step number of the latest-checkpoint series.
    """
    eval_sets = read_checked_eval_sets(config)
    restored = inference.restore_variables(data.resolve(workdir), config, checkpoint)
    parallelism = parallel.create(config)
    eval_step = parallelism.compile_eval_step(restored.model, config.num_classes)
    probabilities = evaluation.compile_probabilities(restored.model)

    def plot_confusion(name, metrics, out):
        evaluation.plot_confusion(
            metrics["confusion_matrix"],
            config.class_names,
            f"{name}: {metrics['accuracy']:.2%} ({restored.which}, step {restored.step})",
            out / f"confusion_{name}.png",
        )

    return write_checkpoint_evaluation(
        config,
        workdir,
        restored,
        eval_sets,
        lambda eval_set: _evaluate_set(
            config, parallelism, eval_step, probabilities, restored.variables, eval_set
        ),
        _write_eval_scalars,
        table_row,
        plot_confusion,
    )


def read_checked_eval_sets(config) -> dict:
    """The config checked and its evaluation sets read (before any checkpoint is restored)."""
    config_checks.validate_config(config)
    eval_sets = data.read_eval_sets(config)
    if not eval_sets:
        raise ValueError("no evaluation set: set config.data.test_csv or config.eval_sets")
    return eval_sets


def write_checkpoint_evaluation(
    config, workdir, restored, eval_sets, evaluate_set, write_scalars, describe, report=None
) -> dict[str, Any]:
    """Evaluates a restored checkpoint on every set and writes WORKDIR/eval/WHICH-STEP/.

    Shared by the LDLVA and the VA `--mode=eval`: each set is decoded, measured by
    `evaluate_set(eval_set) -> metrics`, written to TensorBoard by `write_scalars(writer, step,
    name, metrics)` and passed to `report(name, metrics, out)` (process 0 only) for whatever
    else the task writes; all sets' metrics go to `eval_results.json`, and a table of their
    `describe(metrics)` rows to the console. The log goes to `eval.log` there.
    """
    step = restored.step
    out = data.resolve(workdir) / "eval" / f"{restored.which}-{step}"
    out.mkdir(parents=True, exist_ok=True)
    console.open_log_file(out / run_log_name("eval"))
    writer = metric_writers.create_default_writer(
        out, just_logging=jax.process_index() > 0, asynchronous=False
    )
    results = {}
    for name, eval_set in eval_sets.items():
        eval_set.decode(config.input_size)
        results[name] = evaluate_set(eval_set)
        results[name].update(step=step, checkpoint=restored.which)
        write_scalars(writer, step, name, results[name])
        if report is not None and jax.process_index() == 0:
            report(name, results[name], out)
    if jax.process_index() == 0:
        _write_json(out / EVAL_RESULTS_FILE, results)
    writer.flush()
    console.show(console.table({name: describe(metrics) for name, metrics in results.items()}))
    console.show(
        f"Results of the {restored.which} checkpoint (step {step}) in {console.shown_path(out)}"
    )
    return results
