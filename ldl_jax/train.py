"""The training loop of every task: validate, restore, train, evaluate, checkpoint
(docs/METHOD.md §4, §5).

`train_and_evaluate(config, workdir)` runs or resumes a training run in `workdir`;
`evaluate_checkpoint(config, workdir, checkpoint)` evaluates a saved one. What differs between
LDLVA and the VA regressor (state, step, evaluation, scalars, the best-checkpoint metric) comes
from the task registry (`ldl_jax.tasks`). The data comes from `ldl_jax.data` (validated before
any image is decoded or anything in the workdir is written), the restored model from
`ldl_jax.inference.restore_variables`.
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
    config_fields,
    console,
    data,
    inference,
    parallel,
    tasks,
)
from ldl_jax.train_state import create_optimizer

EVAL_RESULTS_FILE = "eval_results.json"
RECENT_EVALS = 5  # docs/METHOD.md §5: report the mean of the last 5 validation evaluations


def _variables(state) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def _write_json(path: pathlib.Path, value) -> None:
    """Writes via a temporary file, so a crash never leaves a truncated file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    temporary.replace(path)


def checked_config(config):
    """`config` with the fields it lacks filled (`config_fields.complete`), then validated."""
    config = config_fields.complete(config)
    config_checks.validate_config(config)
    return config


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
    signature = tasks.of(config).signature(config, train_data.num_rows)
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
    """Trains (or resumes) `config.task`'s model in `workdir`; returns the final evaluations."""
    started = time.monotonic()
    config = checked_config(config)
    task = tasks.of(config)
    train_data = data.open_train_data(config, task.row_format)
    workdir = data.resolve(workdir)
    steps_per_epoch = train_data.steps_per_epoch
    num_train_steps = train_data.num_train_steps
    metric = task.best_metric
    best_key = f"best_val_{metric}"

    parallelism = parallel.create(config)
    model = task.create_model(config, bn_axis_name=parallelism.bn_axis_name)
    tx = create_optimizer(config, steps_per_epoch)
    state = task.create_state(config, model, tx, train_data.num_rows)
    state, meta, checkpoints, writer = open_run(
        config, workdir, state, parallelism, train_data, {best_key: None, "val_history": []}
    )
    if int(state.step) == 0:  # a fresh run (not resumed)
        state = task.prepare_state(config, state, model, train_data)
    eval_sets = train_data.eval_sets
    train_step, batches_from = task.compile_train(config, parallelism, model, tx, train_data)
    evaluate_set = task.compile_evaluate(config, parallelism, model)

    start_step = int(state.step)
    state = parallelism.place_state(state)
    batches = batches_from(start_step)
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
        summary = train_metrics.flush()  # raises on a non-finite loss, naming the step
        if summary is not None:
            writer.write_scalars(step, summary)
            progress.set(loss=format(summary["train/loss"], task.loss_format))

    def synced_host_state():
        nonlocal state
        log_train_metrics(step)  # never evaluate or save a state after a non-finite loss
        state = parallelism.sync_batch_stats(state)
        return parallelism.host_state(state)

    def evaluate(name, host_state) -> dict[str, Any]:
        metrics = evaluate_set(_variables(host_state), eval_sets[name])
        metrics["step"] = int(host_state.step)
        writer.write_scalars(metrics["step"], task.scalars(name, metrics))
        return metrics

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
                val = results["val"] = evaluate("val", host_state)
                meta["val_history"].append(
                    {"step": step, **{name: val[name] for name in task.history_metrics}}
                )
                is_best = meta[best_key] is None or val[metric] > meta[best_key]
                console.show(
                    f"step {step}/{num_train_steps}: {task.val_line(val)}"
                    + (" (best so far)" if is_best else "")
                )
                if is_best:
                    meta[best_key] = val[metric]
                    # The best series ranks its checkpoints by 'accuracy': the task's metric.
                    checkpoints.save(
                        host_state, meta, checkpointing.BEST, metrics={"accuracy": val[metric]}
                    )
            end_of_epoch = step % steps_per_epoch == 0
            if is_last or (end_of_epoch and (step // steps_per_epoch) % config.save_interval == 0):
                checkpoints.save(synced_host_state(), meta)

    step = num_train_steps
    host_state = synced_host_state()
    for name in eval_sets:
        if results.get(name, {}).get("step") != int(host_state.step):  # not evaluated just now
            results[name] = evaluate(name, host_state)
    if meta["val_history"]:
        recent = [entry[metric] for entry in meta["val_history"][-RECENT_EVALS:]]
        results["val_summary"] = {
            f"best_{metric}": meta[best_key],
            task.summary_mean_key.format(n=RECENT_EVALS): float(np.mean(recent)),
            "history": meta["val_history"],
        }
    if jax.process_index() == 0:
        _write_json(workdir / EVAL_RESULTS_FILE, results)
    writer.flush()
    checkpoints.wait_until_finished()
    checkpoints.close()
    best = None
    if meta["val_history"]:
        best = task.best_line(max(meta["val_history"], key=lambda entry: entry[metric]))  # first
    show_summary(
        {name: task.table_row(results[name]) for name in eval_sets}, best, workdir, started
    )
    return results


def evaluate_checkpoint(config, workdir, checkpoint: str = "latest") -> dict[str, Any]:
    """Evaluates the latest, best or a given step's checkpoint on every configured set.

    The sets are `val` and `test` of config.data and the named sets of `config.eval_sets`.
    Results go to WORKDIR/eval/CHECKPOINT-STEP/: `eval_results.json`, TensorBoard scalars and
    what the task reports besides (LDLVA: a confusion-matrix PNG per set). The log goes to
    `eval.log` there.

    Args:
      config: the run's config (data paths may point at other test sets).
      workdir: the training run's workdir.
      checkpoint: 'latest', 'best' or a step number (either series).
    """
    config = checked_config(config)
    task = tasks.of(config)
    eval_sets = data.read_eval_sets(config, task.row_format)
    if not eval_sets:
        raise ValueError("no evaluation set: set config.data.test_csv or config.eval_sets")
    workdir = data.resolve(workdir)
    restored = inference.restore_variables(workdir, config, checkpoint)
    parallelism = parallel.create(config)
    evaluate_set = task.compile_evaluate(config, parallelism, restored.model)

    step = restored.step
    out = workdir / "eval" / f"{restored.which}-{step}"
    out.mkdir(parents=True, exist_ok=True)
    console.open_log_file(out / run_log_name("eval"))
    writer = metric_writers.create_default_writer(
        out, just_logging=jax.process_index() > 0, asynchronous=False
    )
    results = {}
    for name, eval_set in eval_sets.items():
        eval_set.decode(config.input_size)
        results[name] = evaluate_set(restored.variables, eval_set)
        results[name].update(step=step, checkpoint=restored.which)
        writer.write_scalars(step, task.scalars(name, results[name]))
        if task.report is not None and jax.process_index() == 0:
            task.report(config, name, results[name], restored, out)
    if jax.process_index() == 0:
        _write_json(out / EVAL_RESULTS_FILE, results)
    writer.flush()
    console.show(console.table({name: task.table_row(m) for name, m in results.items()}))
    console.show(
        f"Results of the {restored.which} checkpoint (step {step}) in {console.shown_path(out)}"
    )
    return results
