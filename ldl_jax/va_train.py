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

import json
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from ldl_jax import checkpointing, inference, input_pipeline, parallel, train, va_data, va_model
from ldl_jax.train_state import create_optimizer

EVAL_RESULTS_FILE = train.EVAL_RESULTS_FILE
SCALARS = ("ccc_valence", "ccc_arousal", "rmse_valence", "rmse_arousal", "ccc", "rmse")


def validate_va_config(config) -> None:
    """The VA task's own config checks (after `train.validate_config`'s shared ones)."""
    train.validate_config(config)
    if config.get("task", "ldl") != va_model.TASK:
        raise ValueError(f"config.task={config.get('task')!r}: the VA loop needs 'va'")
    loss = config.get("va_loss", va_model.DEFAULT_LOSS)
    if loss not in va_model.LOSSES:
        raise ValueError(f"config.va_loss={loss!r} is not one of {va_model.LOSSES}")
    if config.parallel != "mesh":
        raise ValueError(
            f"config.parallel={config.parallel!r}: the VA task runs with 'mesh' only (one "
            "global program, exact CCC over the global batch)"
        )


def va_signature(config, num_train_rows: int) -> dict[str, Any]:
    """What must match for a VA checkpoint to be resumed or evaluated."""
    return {
        "task": va_model.TASK,
        "backbone": config.model.backbone,
        "input_size": int(config.input_size),
        "num_train_rows": int(num_train_rows),
    }


def _read_eval_tables(config) -> dict[str, va_data.VATable]:
    sources = {
        name: (config.data.get(f"{name}_csv"), config.data.image_dir) for name in ("val", "test")
    }
    for name, source in config.get("eval_sets", {}).items():
        sources[name] = (source.csv, source.image_dir)
    return {
        name: va_data.read_va_table(train._resolve(csv_path), train._resolve(image_dir))
        for name, (csv_path, image_dir) in sources.items()
        if csv_path
    }


def _compile_predict(parallelism: parallel.MeshParallel, model):
    return jax.jit(
        va_model.make_va_predict(model),
        in_shardings=(parallelism.replicated, parallelism.sharded),
        out_shardings=parallelism.replicated,
    )


def predict_images(predict, variables, images, batch_size: int, place=None) -> np.ndarray:
    """(N, 2) valence/arousal of uint8 images through one compiled function, padded batches.

    `place` maps a global numpy batch of images to what `predict` takes (default: as is).
    """
    outputs = []
    for batch in va_data.image_batches(images, batch_size=batch_size):
        image = batch["image"] if place is None else place(batch["image"])
        outputs.append((predict(variables, image), batch["mask"]))
    if not outputs:
        return np.zeros((0, 2), np.float32)
    return np.concatenate([np.asarray(va)[mask] for va, mask in outputs]).astype(np.float32)


def _evaluate_set(config, parallelism, predict, variables, images, table) -> dict[str, Any]:
    def place(image):
        return parallelism.place_batch(parallel.local_slice({"image": image}))["image"]

    predictions = predict_images(predict, variables, images, config.eval_batch_size, place)
    return va_model.va_metrics(predictions, table.va)


def _write_scalars(writer, step: int, name: str, metrics: dict[str, Any]) -> None:
    writer.write_scalars(step, {f"{name}/{key}": metrics[key] for key in SCALARS})


def _variables(state) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def train_and_evaluate(config, workdir) -> dict[str, Any]:
    """Trains (or resumes) the VA regressor in `workdir`; returns the final evaluations."""
    validate_va_config(config)
    train.prepare_synthetic_data(config)
    table = va_data.read_va_table(
        train._resolve(config.data.train_csv), train._resolve(config.data.image_dir)
    )
    workdir = train._resolve(workdir)
    eval_tables = _read_eval_tables(config)
    steps_per_epoch = table.num_rows // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size={config.batch_size} exceeds the {table.num_rows} rows of "
            f"{config.data.train_csv}"
        )
    num_train_steps = config.num_train_steps
    if num_train_steps <= 0:
        num_train_steps = config.num_epochs * steps_per_epoch

    parallelism = parallel.create(config)
    model = va_model.create_va_model(config)
    tx = create_optimizer(config, steps_per_epoch)
    state = va_model.create_va_state(config, model, tx)
    checkpoints = checkpointing.Checkpoints(workdir)
    signature = va_signature(config, table.num_rows)
    checkpoints.check_signature(signature)
    meta = {"signature": signature, "best_val_ccc": None, "val_history": []}
    if checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(parallelism.checkpoint_target(state))
        logging.info("Resumed from step %d", int(state.step))

    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        train._write_json(workdir / "config.json", json.loads(config.to_json_best_effort()))
    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0, asynchronous=False
    )
    parameter_overview.log_parameter_overview(state.params)

    images = input_pipeline.load_images(
        table.paths,
        config.input_size,
        cache_path=str(workdir / "cache" / "train_images.npy"),
        max_in_memory_bytes=int(config.data.max_in_memory_gb * (1 << 30)),
    )
    eval_images = {
        name: input_pipeline.load_images(t.paths, config.input_size)
        for name, t in eval_tables.items()
    }
    train_step = jax.jit(
        va_model.make_va_train_step(model, tx, config.get("va_loss", va_model.DEFAULT_LOSS)),
        in_shardings=(parallelism.replicated, parallelism.sharded),
        out_shardings=(parallelism.replicated, parallelism.replicated),
        donate_argnums=0,
    )
    predict = _compile_predict(parallelism, model)

    start_step = int(state.step)
    state = parallelism.place_state(state)
    batches = train.prefetch_to_device(
        va_data.va_train_batches(
            table,
            images,
            batch_size=config.batch_size,
            seed=config.seed,
            pad_size=config.pad_size,
            start_step=start_step,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        ),
        parallelism.place_batch,
    )
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=num_train_steps, writer=writer
    )
    train_metrics = train._MetricBuffer()
    results = {}

    def log_train_metrics(step):
        summary = train_metrics.flush()  # raises on a non-finite loss, naming the step
        if summary is not None:
            writer.write_scalars(step, summary)

    def evaluate(name, step):
        metrics = _evaluate_set(
            config, parallelism, predict, _variables(state), eval_images[name], eval_tables[name]
        )
        _write_scalars(writer, step, name, metrics)
        return {**metrics, "step": step}

    for step in range(start_step + 1, num_train_steps + 1):
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            state, metrics = train_step(state, next(batches))
        train_metrics.append(step, metrics)
        report_progress(step)
        is_last = step == num_train_steps
        if step % config.log_every_steps == 0 or is_last:
            log_train_metrics(step)
        if "val" in eval_images and (step % config.val_interval == 0 or is_last):
            log_train_metrics(step)  # never evaluate or save after a non-finite loss
            results["val"] = evaluate("val", step)
            val_ccc = results["val"]["ccc"]
            meta["val_history"].append(
                {"step": step, "ccc": val_ccc, "rmse": results["val"]["rmse"]}
            )
            if meta["best_val_ccc"] is None or val_ccc > meta["best_val_ccc"]:
                meta["best_val_ccc"] = val_ccc
                # The best series ranks checkpoints by 'accuracy': here the mean val CCC.
                checkpoints.save(state, meta, checkpointing.BEST, metrics={"accuracy": val_ccc})
        end_of_epoch = step % steps_per_epoch == 0
        if is_last or (end_of_epoch and (step // steps_per_epoch) % config.save_interval == 0):
            log_train_metrics(step)
            checkpoints.save(state, meta)

    step = int(state.step)
    for name in eval_images:
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
    return results


def _restore(workdir, checkpoint: str, config=None):
    """(config, model, {'params', 'batch_stats'}, which, step) of a VA workdir's checkpoint.

    Raises:
      ValueError: the workdir holds an LDLVA (classification) run, not a VA regressor.
      FileNotFoundError: no such workdir or checkpoint.
    """
    workdir = train._resolve(workdir)
    saved_config = inference.read_config(workdir)
    if saved_config.get("task", "ldl") != va_model.TASK:
        raise ValueError(
            f"{workdir} holds a run with task={saved_config.get('task', 'ldl')!r} (an LDLVA "
            "classifier), not a valence/arousal regressor: train one with a config whose "
            "task is 'va' (e.g. configs/resnet18_affectnet_va.py) and pass its workdir"
        )
    config = saved_config if config is None else config
    checkpoints = checkpointing.Checkpoints(workdir)
    try:
        which, step = checkpointing.parse_checkpoint(checkpoint)
        step = checkpoints.existing_step(which, step)
        stored = checkpoints.read_meta(which, step)["signature"]
        if stored.get("task") != va_model.TASK:
            raise ValueError(f"{workdir}: the {which} checkpoint at step {step} is not a VA one")
        checkpoints.check_signature(va_signature(config, stored["num_train_rows"]))
        model = va_model.create_va_model(config)
        tx = create_optimizer(config, steps_per_epoch=1)
        abstract = jax.eval_shape(lambda: va_model.create_va_state(config, model, tx))
        variables = checkpoints.restore_variables(abstract, which, step)
    finally:
        checkpoints.close()
    return config, model, variables, which, step


def restore_regressor(workdir, checkpoint: str = "latest"):
    """(config, model, variables, step) of a trained VA workdir, on one device."""
    config, model, variables, _, step = _restore(workdir, checkpoint)
    return config, model, variables, step


def evaluate_checkpoint(config, workdir, checkpoint: str = "latest") -> dict[str, Any]:
    """Evaluates a saved regressor on `val`, `test` and `config.eval_sets`.

    Writes WORKDIR/eval/CHECKPOINT-STEP/eval_results.json and TensorBoard scalars.
    """
    validate_va_config(config)
    eval_tables = _read_eval_tables(config)
    if not eval_tables:
        raise ValueError("no evaluation set: set config.data.test_csv or config.eval_sets")
    config, model, variables, which, step = _restore(workdir, checkpoint, config)
    parallelism = parallel.create(config)
    predict = _compile_predict(parallelism, model)
    out = train._resolve(workdir) / "eval" / f"{which}-{step}"
    out.mkdir(parents=True, exist_ok=True)
    writer = metric_writers.create_default_writer(
        out, just_logging=jax.process_index() > 0, asynchronous=False
    )
    results = {}
    for name, table in eval_tables.items():
        images = input_pipeline.load_images(table.paths, config.input_size)
        results[name] = _evaluate_set(config, parallelism, predict, variables, images, table)
        results[name].update(step=step, checkpoint=which)
        _write_scalars(writer, step, name, results[name])
        logging.info("[%d] %s: %s", step, name, {k: round(results[name][k], 4) for k in SCALARS})
    if jax.process_index() == 0:
        train._write_json(out / EVAL_RESULTS_FILE, results)
    writer.flush()
    return results
