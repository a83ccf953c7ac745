"""The task registry: what the training loop (`ldl_jax.train`) needs to know of each task.

`config.task` names one: "ldl", the LDLVA expression classifier (docs/METHOD.md), or "va",
the valence/arousal regressor that annotates data sets without VA labels
(`configs/resnet18_affectnet_va.py`, then `python -m ldl_jax.annotate_va`). A task says how to
build its state, compile its step and its evaluation of a set, which scalars and console rows
its evaluations give, and which validation metric picks the `best` checkpoint; its model and
checkpoint signature come from `ldl_jax.task_models`. One loop runs any of them.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax

from ldl_jax import (
    config_fields,
    console,
    data,
    evaluation,
    inference,
    memory_bank,
    task_models,
    train_state,
    va_model,
)

# The batch loop a task compiles: (state, batch) -> (state, metrics), and its batches from a
# step on.
TrainStep = Callable[[Any, Any], tuple[Any, Any]]
Batches = Callable[[int], Iterator]
# (variables {'params', 'batch_stats'}, data.EvalSet) -> that set's metrics.
EvaluateSet = Callable[[dict, Any], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Task:
    """One task of the training loop.

    Attributes:
      name: its `config.task`.
      row_format: the format of its CSVs' rows (`ldl_jax.data`: LDLVA_ROWS or VA_ROWS).
      best_metric: the validation metric (higher is better) that picks the `best` checkpoint.
      history_metrics: the validation metrics kept per evaluation in the checkpoints' meta.
      summary_mean_key: the `val_summary` key of the mean of the last evaluations' best_metric,
        with `{n}` for their number.
      loss_format: how the console's progress line shows the train loss.
      create_state: (config, model, tx, num_train_rows) -> a fresh train state.
      prepare_state: (config, state, model, train_data) -> the state a fresh run starts from.
      compile_train: (config, parallelism, model, tx, train_data) -> (TrainStep, Batches).
      compile_evaluate: (config, parallelism, model) -> EvaluateSet.
      scalars: (set name, metrics) -> the TensorBoard scalars of one set's evaluation.
      table_row: metrics -> the set's row of the console's results table.
      val_line: metrics -> what the console says of a validation evaluation.
      best_line: history entry -> the summary's phrase for the best validation.
      report: (config, name, metrics, restored, out) -> anything else `--mode=eval` writes.
    """

    name: str
    row_format: str
    best_metric: str
    history_metrics: tuple[str, ...]
    summary_mean_key: str
    loss_format: str
    create_state: Callable[..., Any]
    prepare_state: Callable[..., Any]
    compile_train: Callable[..., tuple[TrainStep, Batches]]
    compile_evaluate: Callable[..., EvaluateSet]
    scalars: Callable[[str, dict], dict[str, float]]
    table_row: Callable[[dict], dict[str, str]]
    val_line: Callable[[dict], str]
    best_line: Callable[[dict], str]
    report: Callable[..., None] | None = None

    def create_model(self, config, bn_axis_name: str | None = None):
        return task_models.of(config).create_model(config, bn_axis_name=bn_axis_name)

    def signature(self, config, num_train_rows: int) -> dict[str, Any]:
        return task_models.signature(config, num_train_rows)


# --------------------------------------------------------------------------------------------
# LDLVA: the expression classifier.


def _ldl_prepare_state(config, state, model, train_data):
    """A fresh run with the neighbour memory bank starts from one pass over the train set."""
    if config_fields.uses_memory_bank(config):
        return memory_bank.fill(state, model, train_data.images, config.eval_batch_size)
    return state


def _ldl_compile_train(config, parallelism, model, tx, train_data) -> tuple[TrainStep, Batches]:
    """The LDLVA step (docs/METHOD.md §3) fed for `config.data.placement`."""
    feed = train_data.feed(parallelism)
    train_step = parallelism.compile_train_step(
        model,
        tx,
        config,
        train_data.class_weights,
        train_labels=train_data.table.labels,
        train_neighbors=train_data.table.knn,
        input_images=feed.input_images,
    )
    return train_step, feed.batches


def _ldl_compile_evaluate(config, parallelism, model) -> EvaluateSet:
    eval_step = parallelism.compile_eval_step(model, config.num_classes)
    probabilities = evaluation.compile_probabilities(model)

    def evaluate_set(variables, eval_set) -> dict[str, Any]:
        """Accuracy, balanced accuracy and the confusion matrix of one set, each process
        feeding its slice of every padded global batch; a set with crowd distributions also
        gets `ldl_measures` (`evaluation.distribution_measures`)."""
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
                probabilities, variables, eval_set.images, crowd, batch_size
            )
        return metrics

    return evaluate_set


def _ldl_scalars(name: str, metrics: dict[str, Any]) -> dict[str, float]:
    scalars = {
        f"{name}/accuracy": metrics["accuracy"],
        f"{name}/balanced_accuracy": metrics["balanced_accuracy"],
    }
    for measure, value in metrics.get("ldl_measures", {}).items():
        scalars[f"{name}/ldl/{measure}"] = value
    return scalars


def _ldl_table_row(metrics: dict[str, Any]) -> dict[str, str]:
    return {
        "accuracy": console.percent(metrics["accuracy"]),
        "balanced": console.percent(metrics["balanced_accuracy"]),
        "images": str(metrics["num_examples"]),
        "step": str(metrics["step"]),
    }


def _ldl_report(config, name: str, metrics: dict[str, Any], restored, out) -> None:
    """A confusion-matrix PNG per evaluated set."""
    evaluation.plot_confusion(
        metrics["confusion_matrix"],
        config.class_names,
        f"{name}: {metrics['accuracy']:.2%} ({restored.which}, step {restored.step})",
        out / f"confusion_{name}.png",
    )


LDL = Task(
    name=config_fields.LDL,
    row_format=data.LDLVA_ROWS,
    best_metric="accuracy",
    history_metrics=("accuracy",),
    summary_mean_key="mean_of_last_{n}",
    loss_format=".3f",
    create_state=train_state.create_train_state,
    prepare_state=_ldl_prepare_state,
    compile_train=_ldl_compile_train,
    compile_evaluate=_ldl_compile_evaluate,
    scalars=_ldl_scalars,
    table_row=_ldl_table_row,
    val_line=lambda m: (
        f"val accuracy {console.percent(m['accuracy'])}, balanced "
        f"{console.percent(m['balanced_accuracy'])}"
    ),
    best_line=lambda e: f"accuracy {console.percent(e['accuracy'])} at step {e['step']}",
    report=_ldl_report,
)


# --------------------------------------------------------------------------------------------
# The valence/arousal regressor.

VA_SCALARS = ("ccc_valence", "ccc_arousal", "rmse_valence", "rmse_arousal", "ccc", "rmse")


def _va_compile_train(config, parallelism, model, tx, train_data) -> tuple[TrainStep, Batches]:
    """The regression step over the global batch (`config.parallel = 'mesh'` only), fed
    host-augmented images."""
    train_step = jax.jit(
        va_model.make_va_train_step(model, tx, config.va_loss),
        in_shardings=(parallelism.replicated, parallelism.sharded),
        out_shardings=(parallelism.replicated, parallelism.replicated),
        donate_argnums=0,
    )
    return train_step, functools.partial(train_data.train_batches, place=parallelism.place_batch)


def _compile_va_predict(parallelism, model):
    """(variables, global uint8 batch) -> (n, 2) valence/arousal, over the device mesh."""
    return jax.jit(
        va_model.make_va_predict(model),
        in_shardings=(parallelism.replicated, parallelism.sharded),
        out_shardings=parallelism.replicated,
    )


def _va_compile_evaluate(config, parallelism, model) -> EvaluateSet:
    predict = _compile_va_predict(parallelism, model)

    def place(image):
        return parallelism.place_batch({"image": image})["image"]

    def evaluate_set(variables, eval_set) -> dict[str, Any]:
        """RMSE and CCC per dimension of one set."""
        predictions = inference.predict_va(
            predict, variables, eval_set.images, config.eval_batch_size, place
        )
        return va_model.va_metrics(predictions, eval_set.table.va)

    return evaluate_set


def _va_table_row(metrics: dict[str, Any]) -> dict[str, str]:
    row = {key: f"{metrics[key]:.4f}" for key in ("ccc", "ccc_valence", "ccc_arousal", "rmse")}
    return {**row, "images": str(metrics["num_examples"]), "step": str(metrics["step"])}


VA = Task(
    name=config_fields.VA,
    row_format=data.VA_ROWS,
    best_metric="ccc",
    history_metrics=("ccc", "rmse"),
    summary_mean_key="mean_ccc_of_last_{n}",
    loss_format=".4f",
    create_state=lambda config, model, tx, num_train_rows: train_state.create_va_state(
        config, model, tx
    ),
    prepare_state=lambda config, state, model, train_data: state,
    compile_train=_va_compile_train,
    compile_evaluate=_va_compile_evaluate,
    scalars=lambda name, metrics: {f"{name}/{key}": metrics[key] for key in VA_SCALARS},
    table_row=_va_table_row,
    val_line=lambda m: f"val CCC {m['ccc']:.4f}, RMSE {m['rmse']:.4f}",
    best_line=lambda e: f"CCC {e['ccc']:.4f} at step {e['step']}",
)


TASKS = {task.name: task for task in (LDL, VA)}


def of(config) -> Task:
    """The task of `config.task`."""
    if config.task not in TASKS:
        raise ValueError(f"config.task={config.task!r} is not one of {sorted(TASKS)}")
    return TASKS[config.task]
