"""The valence/arousal regression loop (`config.task = "va"`): train, evaluate, checkpoint.

  python -m ldl_jax.main --config=configs/resnet18_affectnet_va.py --workdir=runs/affectnet_va

`train_and_evaluate(config, workdir)` trains (or resumes) the regressor of `ldl_jax.va_model`
on the training CSV's `valence` and `arousal`, evaluates RMSE and CCC per dimension on `val`
(every `val_interval` steps; the best mean CCC is kept as the `best` checkpoint), `test` and
`config.eval_sets`, and writes `eval_results.json`, TensorBoard scalars and orbax checkpoints
into the workdir, as `ldl_jax.train` does for LDLVA. `evaluate_checkpoint` evaluates a saved
one; `restore_regressor` hands a trained model to `ldl_jax.annotate_va`.

Devices: `config.parallel = "mesh"` (one device or many, one global program). The checkpoint
signature carries `task: "va"`, so an LDLVA workdir is never resumed as a VA one or back.
"""

import time
from typing import Any

import jax
import numpy as np
from clu import periodic_actions

from ldl_jax import checkpointing, console, data, inference, parallel, train, va_model
from ldl_jax.train_state import create_optimizer

EVAL_RESULTS_FILE = train.EVAL_RESULTS_FILE
SCALARS = ("ccc_valence", "ccc_arousal", "rmse_valence", "rmse_arousal", "ccc", "rmse")


def _check_task(config) -> None:
    if config.get("task", "ldl") != va_model.TASK:
        raise ValueError(f"config.task={config.get('task')!r}: the VA loop needs 'va'")


def _compile_predict(parallelism: parallel.MeshParallel, model):
    return jax.jit(
        va_model.make_va_predict(model),
        in_shardings=(parallelism.replicated, parallelism.sharded),
        out_shardings=parallelism.replicated,
    )


def predict_images(predict, variables, images, batch_size: int, place=None) -> np.ndarray:
    """(N, 2) valence/arousal of uint8 images (`inference.predict_in_batches`)."""
    if len(images) == 0:
        return np.zeros((0, 2), np.float32)
    return inference.predict_in_batches(predict, variables, images, batch_size, place).astype(
        np.float32
    )


def _evaluate_set(config, parallelism, predict, variables, eval_set) -> dict[str, Any]:
    def place(image):
        return parallelism.place_batch({"image": image})["image"]

    predictions = predict_images(predict, variables, eval_set.images, config.eval_batch_size, place)
    return va_model.va_metrics(predictions, eval_set.table.va)


def table_row(metrics: dict[str, Any]) -> dict[str, str]:
    """A set's row of the console's results table."""
    row = {key: f"{metrics[key]:.4f}" for key in ("ccc", "ccc_valence", "ccc_arousal", "rmse")}
    return {**row, "images": str(metrics["num_examples"]), "step": str(metrics["step"])}


def _write_scalars(writer, step: int, name: str, metrics: dict[str, Any]) -> None:
    writer.write_scalars(step, {f"{name}/{key}": metrics[key] for key in SCALARS})


def _variables(state) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def train_and_evaluate(config, workdir) -> dict[str, Any]:
    """Trains (or resumes) the VA regressor in `workdir`; returns the final evaluations."""
    started = time.monotonic()
    _check_task(config)
    train_data = data.open_train_data(config)
    workdir = data.resolve(workdir)
    steps_per_epoch = train_data.steps_per_epoch
    num_train_steps = train_data.num_train_steps

    parallelism = parallel.create(config)
    model = va_model.create_va_model(config)
    tx = create_optimizer(config, steps_per_epoch)
    state = va_model.create_va_state(config, model, tx)
    state, meta, checkpoints, writer = train.open_run(
        config,
        workdir,
        state,
        parallelism,
        train_data,
        {"best_val_ccc": None, "val_history": []},
    )
    eval_sets = train_data.eval_sets
    train_step = jax.jit(
        va_model.make_va_train_step(model, tx, config.get("va_loss", va_model.DEFAULT_LOSS)),
        in_shardings=(parallelism.replicated, parallelism.sharded),
        out_shardings=(parallelism.replicated, parallelism.replicated),
        donate_argnums=0,
    )
    predict = _compile_predict(parallelism, model)

    start_step = int(state.step)
    state = parallelism.place_state(state)
    batches = train_data.train_batches(start_step, parallelism.place_batch)
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=num_train_steps, writer=writer
    )
    train_metrics = train._MetricBuffer()
    results = {}
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
            progress.set(loss=f"{summary['train/loss']:.4f}")

    def evaluate(name, step):
        metrics = _evaluate_set(config, parallelism, predict, _variables(state), eval_sets[name])
        _write_scalars(writer, step, name, metrics)
        return {**metrics, "step": step}

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
                log_train_metrics(step)  # never evaluate or save after a non-finite loss
                results["val"] = evaluate("val", step)
                val_ccc = results["val"]["ccc"]
                meta["val_history"].append(
                    {"step": step, "ccc": val_ccc, "rmse": results["val"]["rmse"]}
                )
                is_best = meta["best_val_ccc"] is None or val_ccc > meta["best_val_ccc"]
                console.show(
                    f"step {step}/{num_train_steps}: val CCC {val_ccc:.4f}, RMSE "
                    f"{results['val']['rmse']:.4f}" + (" (best so far)" if is_best else "")
                )
                if is_best:
                    meta["best_val_ccc"] = val_ccc
                    # The best series ranks checkpoints by 'accuracy': here the mean val CCC.
                    checkpoints.save(state, meta, checkpointing.BEST, metrics={"accuracy": val_ccc})
            end_of_epoch = step % steps_per_epoch == 0
            if is_last or (end_of_epoch and (step // steps_per_epoch) % config.save_interval == 0):
                log_train_metrics(step)
                checkpoints.save(state, meta)

    step = int(state.step)
    for name in eval_sets:
        if results.get(name, {}).get("step") != step:
            results[name] = evaluate(name, step)
    if meta["val_history"]:
        recent = [entry["ccc"] for entry in meta["val_history"][-train.RECENT_EVALS :]]
        results["val_summary"] = {
            "best_ccc": meta["best_val_ccc"],
            f"mean_ccc_of_last_{train.RECENT_EVALS}": float(np.mean(recent)),
            "history": meta["val_history"],
        }
    if jax.process_index() == 0:
        train._write_json(workdir / EVAL_RESULTS_FILE, results)
    writer.flush()
    checkpoints.wait_until_finished()
    checkpoints.close()
    best = None
    if meta["val_history"]:
        best_entry = max(meta["val_history"], key=lambda entry: entry["ccc"])  # the first
        best = f"CCC {best_entry['ccc']:.4f} at step {best_entry['step']}"
    rows = {name: table_row(results[name]) for name in eval_sets}
    train.show_summary(rows, best, workdir, started)
    return results


def _restore(workdir, checkpoint: str, config=None) -> inference.Restored:
    """The model and {'params', 'batch_stats'} of a VA workdir's checkpoint.

    Raises:
      ValueError: the workdir holds an LDLVA (classification) run, not a VA regressor.
      FileNotFoundError: no such workdir or checkpoint.
    """
    workdir = data.resolve(workdir)
    saved_config = inference.read_config(workdir)
    if saved_config.get("task", "ldl") != va_model.TASK:
        raise ValueError(
            f"{workdir} holds a run with task={saved_config.get('task', 'ldl')!r} (an LDLVA "
            "classifier), not a valence/arousal regressor: train one with a config whose "
            "task is 'va' (e.g. configs/resnet18_affectnet_va.py) and pass its workdir"
        )
    return inference.restore_variables(workdir, config or saved_config, checkpoint)


def restore_regressor(workdir, checkpoint: str = "latest"):
    """(config, model, variables, step) of a trained VA workdir, on one device."""
    restored = _restore(workdir, checkpoint)
    return restored.config, restored.model, restored.variables, restored.step


def evaluate_checkpoint(config, workdir, checkpoint: str = "latest") -> dict[str, Any]:
    """Evaluates a saved regressor on `val`, `test` and `config.eval_sets`.

    Writes WORKDIR/eval/CHECKPOINT-STEP/eval_results.json and TensorBoard scalars.
    """
    _check_task(config)
    eval_sets = train.read_checked_eval_sets(config)
    restored = _restore(workdir, checkpoint, config)
    parallelism = parallel.create(config)
    predict = _compile_predict(parallelism, restored.model)
    return train.write_checkpoint_evaluation(
        config,
        workdir,
        restored,
        eval_sets,
        lambda eval_set: _evaluate_set(config, parallelism, predict, restored.variables, eval_set),
        _write_scalars,
        table_row,
    )
