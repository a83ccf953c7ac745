"""The training loop: validate, restore, train, evaluate, checkpoint (docs/METHOD.md §4, §5).

`train_and_evaluate(config, workdir)` runs or resumes a training run in `workdir`;
`evaluate_checkpoint(config, workdir, checkpoint)` evaluates a saved one. All input files are
validated before any image is decoded or anything in the workdir is written.
"""

import collections
import dataclasses
import json
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from absl import logging
from clu import metric_writers, parameter_overview, periodic_actions

from ldl_jax import checkpointing, evaluation, input_pipeline, models, parallel, synthetic
from ldl_jax.train_state import TrainState, create_optimizer, create_train_state

EVAL_RESULTS_FILE = "eval_results.json"
RECENT_EVALS = 5  # docs/METHOD.md §5: report the mean of the last 5 validation evaluations


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """A decoded evaluation set."""

    name: str
    images: np.ndarray
    labels: np.ndarray


def _resolve(path: str) -> pathlib.Path:
    return pathlib.Path(path).expanduser().absolute()


def validate_config(config) -> None:
    """Checks the config's own consistency (the data is checked when read)."""
    if config.model.backbone not in models.BACKBONES:
        raise ValueError(
            f"config.model.backbone={config.model.backbone!r} is not one of "
            f"{sorted(models.BACKBONES)}"
        )
    if config.model.dtype not in ("float32", "bfloat16"):
        raise ValueError(f"config.model.dtype={config.model.dtype!r}: use 'float32' or 'bfloat16'")
    if len(config.class_names) != config.num_classes:
        raise ValueError(
            f"config.class_names has {len(config.class_names)} names but "
            f"config.num_classes={config.num_classes}"
        )
    for field in ("batch_size", "num_neighbors", "input_size", "eval_batch_size"):
        if config[field] <= 0:
            raise ValueError(f"config.{field}={config[field]} must be positive")
    if not config.data.train_csv:
        raise ValueError("config.data.train_csv is empty: set it to the training CSV")
    if config.batch_size % jax.process_count():
        raise ValueError(
            f"config.batch_size={config.batch_size} does not divide over "
            f"{jax.process_count()} processes"
        )


def prepare_synthetic_data(config) -> None:
    """Generates the built-in synthetic data set if `config.data.synthetic` asks for it."""
    spec = config.data.get("synthetic")
    if not spec:
        return
    data_dir = _resolve(spec.dir)
    if (data_dir / "train.csv").exists():
        return
    if jax.process_index() == 0:
        logging.info("Generating the synthetic data set in %s", data_dir)
        synthetic.make_synthetic_fer(
            data_dir,
            seed=spec.seed,
            num_train=spec.num_train,
            num_val=spec.num_val,
            num_test=spec.num_test,
            image_size=spec.image_size,
            num_neighbors=spec.num_neighbors,
            class_balance=spec.get("class_balance", "default"),
        )


def _read_eval_tables(config) -> dict[str, input_pipeline.EvalTable]:
    """`val` and `test` from config.data, then every named set of `config.eval_sets`."""
    sources = {
        name: (config.data.get(f"{name}_csv"), config.data.image_dir) for name in ("val", "test")
    }
    for name, source in config.get("eval_sets", {}).items():
        sources[name] = (source.csv, source.image_dir)
    return {
        name: input_pipeline.read_eval_table(
            _resolve(csv_path), _resolve(image_dir), num_classes=config.num_classes
        )
        for name, (csv_path, image_dir) in sources.items()
        if csv_path
    }


def _decode_eval_sets(config, tables) -> dict[str, EvalSet]:
    return {
        name: EvalSet(
            name, input_pipeline.load_images(table.paths, config.input_size), table.labels
        )
        for name, table in tables.items()
    }


def prefetch_to_device(
    batches: Iterator[dict], place: Callable = jax.device_put, size: int = 2
) -> Iterator[dict]:
    """Keeps `size` batches, placed by `place`, in flight to the devices while the step runs."""
    queue = collections.deque()
    for batch in batches:
        queue.append(place(batch))
        if len(queue) == size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _evaluate_set(config, parallelism, eval_step, variables, eval_set: EvalSet) -> dict[str, Any]:
    """Evaluates one set with {'params', 'batch_stats'} = `variables`; each process feeds its
    share of every padded global batch."""
    batches = input_pipeline.eval_batches(
        eval_set.images, eval_set.labels, batch_size=config.eval_batch_size
    )
    placed = (parallelism.place_batch(parallel.local_slice(batch)) for batch in batches)
    return evaluation.evaluate(eval_step, variables["params"], variables["batch_stats"], placed)


def _variables(state: TrainState) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}


def _write_json(path: pathlib.Path, value) -> None:
    """Writes via a temporary file, so a crash never leaves a truncated file."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(value, indent=2))
    temporary.replace(path)


def _write_eval_scalars(writer, step: int, name: str, metrics: dict[str, Any]) -> None:
    writer.write_scalars(
        step,
        {
            f"{name}/accuracy": metrics["accuracy"],
            f"{name}/balanced_accuracy": metrics["balanced_accuracy"],
        },
    )


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


def read_train_table(config) -> input_pipeline.TrainTable:
    """The validated training table of `config` (generating the synthetic set if asked)."""
    validate_config(config)
    prepare_synthetic_data(config)
    return input_pipeline.read_train_table(
        _resolve(config.data.train_csv),
        _resolve(config.data.image_dir),
        num_classes=config.num_classes,
        num_neighbors=config.num_neighbors,
        va_bandwidth=config.data.va_bandwidth,
    )


def train_and_evaluate(config, workdir) -> dict[str, Any]:
    """Trains (or resumes) in `workdir`; returns the final evaluation results."""
    table = read_train_table(config)
    workdir = _resolve(workdir)
    eval_tables = _read_eval_tables(config)
    steps_per_epoch = input_pipeline.steps_per_epoch(table.num_rows, config.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size={config.batch_size} exceeds the {table.num_rows} rows of "
            f"{config.data.train_csv}"
        )
    class_weights = (
        input_pipeline.class_balanced_weights(table.labels, config.num_classes)
        if config.class_weights
        else None
    )
    num_train_steps = (
        config.num_train_steps
        if config.num_train_steps > 0
        else config.num_epochs * steps_per_epoch
    )

    parallelism = parallel.create(config)
    model = models.create_model(config, bn_axis_name=parallelism.bn_axis_name)
    tx = create_optimizer(config, steps_per_epoch)
    state = create_train_state(config, model, tx, table.num_rows)
    checkpoints = checkpointing.Checkpoints(workdir)
    signature = checkpointing.model_signature(config, table.num_rows)
    checkpoints.check_signature(signature)
    meta = {"signature": signature, "best_val_accuracy": None, "val_history": []}
    if checkpoints.latest_step() is not None:
        state, meta = checkpoints.restore(parallelism.checkpoint_target(state))
        logging.info("Resumed from step %d", int(state.step))

    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
        _write_json(workdir / "config.json", json.loads(config.to_json_best_effort()))
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
    eval_sets = _decode_eval_sets(config, eval_tables)
    train_step = parallelism.compile_train_step(
        model, tx, config, class_weights, train_labels=table.labels
    )
    eval_step = parallelism.compile_eval_step(model, config.num_classes)

    start_step = int(state.step)
    state = parallelism.place_state(state)
    batches = prefetch_to_device(
        input_pipeline.train_batches(
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
    train_metrics = _MetricBuffer()
    results = {}  # per set: the latest evaluation

    def log_train_metrics(step):
        summary = train_metrics.flush()
        if summary is not None:
            writer.write_scalars(step, summary)

    def synced_host_state():
        nonlocal state
        log_train_metrics(step)  # never evaluate or save a state after a non-finite loss
        state = parallelism.sync_batch_stats(state)
        return parallelism.host_state(state)

    for step in range(start_step + 1, num_train_steps + 1):
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            state, metrics = train_step(state, next(batches))
        train_metrics.append(step, metrics)
        report_progress(step)
        is_last = step == num_train_steps
        if step % config.log_every_steps == 0 or is_last:
            log_train_metrics(step)
        if "val" in eval_sets and (step % config.val_interval == 0 or is_last):
            host_state = synced_host_state()
            val = _evaluate_set(
                config, parallelism, eval_step, _variables(host_state), eval_sets["val"]
            )
            results["val"] = {**val, "step": step}
            _write_eval_scalars(writer, step, "val", val)
            meta["val_history"].append({"step": step, "accuracy": val["accuracy"]})
            best = meta["best_val_accuracy"]
            if best is None or val["accuracy"] > best:
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
            config, parallelism, eval_step, _variables(host_state), eval_set
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
    validate_config(config)
    workdir = _resolve(workdir)
    eval_tables = _read_eval_tables(config)
    if not eval_tables:
        raise ValueError("no evaluation set: set config.data.test_csv or config.eval_sets")
    checkpoints = checkpointing.Checkpoints(workdir)
    which, step = checkpointing.parse_checkpoint(checkpoint)
    step = checkpoints.existing_step(which, step)
    num_train_rows = checkpoints.read_meta(which, step)["signature"]["num_train_rows"]
    checkpoints.check_signature(checkpointing.model_signature(config, num_train_rows))

    parallelism = parallel.create(config)
    model = models.create_model(config)
    tx = create_optimizer(config, steps_per_epoch=1)
    abstract = jax.eval_shape(lambda: create_train_state(config, model, tx, num_train_rows))
    variables = checkpoints.restore_variables(abstract, which, step)
    checkpoints.close()
    eval_step = parallelism.compile_eval_step(model, config.num_classes)
    out = workdir / "eval" / f"{which}-{step}"
    out.mkdir(parents=True, exist_ok=True)
    writer = metric_writers.create_default_writer(
        out, just_logging=jax.process_index() > 0, asynchronous=False
    )
    results = {}
    for name, eval_set in _decode_eval_sets(config, eval_tables).items():
        results[name] = _evaluate_set(config, parallelism, eval_step, variables, eval_set)
        results[name].update(step=step, checkpoint=which)
        _write_eval_scalars(writer, step, name, results[name])
        if jax.process_index() == 0:
            evaluation.plot_confusion(
                results[name]["confusion_matrix"],
                config.class_names,
                f"{name}: {results[name]['accuracy']:.2%} ({which}, step {step})",
                out / f"confusion_{name}.png",
            )
    if jax.process_index() == 0:
        _write_json(out / EVAL_RESULTS_FILE, results)
    writer.flush()
    return results
