"""Throughput of the LDL train step against its compute floor and its input, in one process.

  python tools/benchmark.py --config=configs/synthetic.py [--dtype=bfloat16] [--batch_size=64]
      [--data=pipeline|device] [--host_sizes=112,224] [--steps=30] [--out=bench.json]

Prints one JSON object. Timed after compilation:
- `ldl_step`: the full LDLVA train step on one random batch of images (central images/s and
  all 1+K images/s), the median of `--steps` steps each waited for;
- `floor`: the least any LDLVA step must do with the same model and dtype: a forward+backward
  pass and Adam on B images plus a train-mode forward pass on B*K, as one compiled program;
  `floor_ratio = ldl_step / floor`;
- `plain_step`: a cross-entropy step on B images, for reference;
- `bank_step`: the LDLVA step with the neighbour memory bank (`config.neighbors =
  'memory_bank'`) on the same batch, which reads the K neighbours from the bank instead of
  running the backbone on them; `bank_speedup = ldl_step / bank_step` (seconds);
- `placements`: for each `config.data.placement`, the step as the trainer compiles it
  (`parallel.MeshParallel` over the local devices) fed by its feed end to end, against the
  same step alone on the feed's first batch again and again; both are `--steps` steps issued
  back to back, waited for at the end. `fed_ratio = step alone / end to end` (1: the input
  never keeps the step waiting). The device placement's step includes the gather and the
  augmentation; `device_step_over_host_step` is its time over the host placement's;
- `host_augment`: the host path alone (gather + TensorFlow augmentation on its threads), all
  1+K images/s and per core, at the config's size and each of `--host_sizes`;
- compile time, peak host memory, and on a GPU the device memory and the MFU from XLA's cost
  analysis (with `--peak_tflops`).
`--data=pipeline` reads the config's training set (TensorFlow decodes it) and measures both
placements and `host_augment`. `--data=device` never imports TensorFlow, so it runs where
TensorFlow is absent: random images and a random neighbour table of `--num_rows` rows, the
device placement only.
"""

import json
import os
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from ldl_jax import config_fields, models, parallel, steps  # noqa: E402
from ldl_jax.data import feeds  # noqa: E402
from ldl_jax.train_state import create_optimizer, create_train_state  # noqa: E402
from tools import random_inputs  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config to benchmark.", lock_config=False)
flags.DEFINE_enum("data", "device", ["device", "pipeline"], "Where batches come from.")
flags.DEFINE_string("dtype", None, "Override config.model.dtype.")
flags.DEFINE_integer("batch_size", None, "Override config.batch_size.")
flags.DEFINE_integer("steps", 30, "Timed steps per measurement (after one warm-up).")
flags.DEFINE_list("host_sizes", [], "More input sizes for the host path's images/s (pipeline).")
flags.DEFINE_integer("num_rows", 4096, "Training rows (theta size) with --data=device.")
flags.DEFINE_float("peak_tflops", 0.0, "The device peak for MFU (e.g. 989 for H100 bf16).")
flags.DEFINE_string("out", None, "Also write the JSON here.")
flags.mark_flag_as_required("config")


def make_floor_step(model, tx):
    """Forward+backward+Adam on B images plus a train-mode forward on B*K, nothing else."""

    def floor_step(state, batch):
        images = models.normalize_images(batch["image"], model.dtype)
        neighbors = models.normalize_images(batch["neighbor_image"], model.dtype)
        neighbors = neighbors.reshape((-1,) + images.shape[1:])
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}
        (_, neighbor_logits), updates = model.apply(
            variables, neighbors, train=True, mutable=["batch_stats"], rngs=rngs
        )
        return _cross_entropy_update(
            model,
            tx,
            state,
            batch,
            images,
            updates["batch_stats"],
            rngs,
            extra=jax.lax.stop_gradient(neighbor_logits).mean(),
        )

    return jax.jit(floor_step, donate_argnums=0)


def make_plain_step(model, tx):
    """A cross-entropy step on the B central images only."""

    def plain_step(state, batch):
        images = models.normalize_images(batch["image"], model.dtype)
        rngs = {"dropout": jax.random.fold_in(state.rng, state.step)}
        return _cross_entropy_update(model, tx, state, batch, images, state.batch_stats, rngs)

    return jax.jit(plain_step, donate_argnums=0)


def _cross_entropy_update(model, tx, state, batch, images, batch_stats, rngs, extra=0.0):
    def loss_fn(params):
        (_, logits), updates = model.apply(
            {"params": params, "batch_stats": batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
            rngs=rngs,
        )
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
        return loss + 0.0 * extra, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(
        step=state.step + 1,
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
    )
    return state, {"loss": loss}


def _open_data(config):
    """The config's decoded training data through `ldl_jax.data` (imports TensorFlow)."""
    from ldl_jax import data

    return data.open_train_data(config).decode(eval_sets=False)


def at_input_size(config, size: int):
    """A copy of `config` at input `size`; other sizes than the config's get the configs' pad,
    size // 28 (4 at 112, 8 at 224)."""
    config = config.copy_and_resolve_references()
    if size != config.input_size:
        config.input_size, config.pad_size = size, size // 28
    return config


def host_images_per_s(config, size: int, num_steps: int) -> dict:
    """All 1+K augmented images/s of the host path alone at `size` (see `at_input_size`), and
    per core."""
    config = at_input_size(config, size)
    batches = _open_data(config).train_batches()
    next(batches)
    start = time.perf_counter()
    for _ in range(num_steps):
        next(batches)
    seconds = (time.perf_counter() - start) / num_steps
    images_per_s = config.batch_size * (1 + config.num_neighbors) / seconds
    return {
        "pad_size": config.pad_size,
        "all_images_per_s": images_per_s,
        "per_core": images_per_s / len(os.sched_getaffinity(0)),
    }


def _compile(step_fn, state, batch):
    start = time.perf_counter()
    compiled = step_fn.lower(state, batch).compile()
    return compiled, time.perf_counter() - start


def _time_steps(compiled, state, batches, num_steps):
    """Median seconds per step; each step is waited for, so the median is the step alone."""
    state, metrics = compiled(state, next(batches))  # warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(num_steps):
        batch = next(batches)
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return statistics.median(times), state


def _time_loop(step_fn, state, batches, num_steps):
    """Seconds per step of `num_steps` steps issued back to back (after one warm-up)."""
    state, metrics = step_fn(state, next(batches))
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(num_steps):
        state, metrics = step_fn(state, next(batches))
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / num_steps


def _placed_copy(parallelism, state):
    """A placed copy of `state` (placing may alias its buffers, which the step donates)."""
    return parallelism.place_state(jax.tree.map(jnp.copy, state))


def measure_feed(config, model, tx, state, feed, train_rows: dict, num_steps: int) -> dict:
    """The trainer's step for `feed` fed end to end, and alone on the feed's first batch.

    `train_rows` holds the step's `train_labels` and `train_neighbors`."""
    parallelism = parallel.MeshParallel()
    step_fn = parallelism.compile_train_step(
        model, tx, config, input_images=feed.input_images, **train_rows
    )
    batches = feed.batches(0)
    first = next(batches)
    alone = _time_loop(step_fn, _placed_copy(parallelism, state), _repeat(first), num_steps)
    fed = _time_loop(step_fn, _placed_copy(parallelism, state), batches, num_steps)
    images = config.batch_size * (1 + config.num_neighbors)
    return {
        "step_alone_seconds": alone,
        "end_to_end_seconds": fed,
        "end_to_end_all_images_per_s": images / fed,
        "fed_ratio": alone / fed,
    }


def _flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per device
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def _add_ratios(results: dict) -> None:
    """The LDL step's time and FLOPs over the floor's and the bank step's, once measured."""
    ldl_step = results.get("ldl_step")
    for other, time_ratio, flops_ratio in (
        ("floor", "floor_ratio", "floor_flops_ratio"),
        ("bank_step", "bank_speedup", "bank_flops_ratio"),
    ):
        if ldl_step is None or other not in results:
            continue
        results[time_ratio] = ldl_step["seconds_per_step"] / results[other]["seconds_per_step"]
        if results[other]["gflops_per_step"]:
            # Over the floor: what the method itself adds (AdaptiveSimNet, losses, updates).
            results[flops_ratio] = ldl_step["gflops_per_step"] / results[other]["gflops_per_step"]


def _repeat(batch):
    while True:
        yield batch


def _device_memory() -> dict | None:
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {key: stats[key] for key in ("peak_bytes_in_use", "bytes_limit") if key in stats}


def benchmark(
    config,
    *,
    data: str = "device",
    num_steps: int = 30,
    num_rows: int = 4096,
    host_sizes=(),
    peak_tflops: float = 0.0,
    report=None,
) -> dict:
    """The module docstring's measurements for `config`, as one dict.

    Args:
      data: 'device' (random images and table, no TensorFlow) or 'pipeline' (the config's
        training set, both placements and `host_augment`).
      num_steps: timed steps per measurement (after one warm-up).
      num_rows: training rows (theta size) with data='device'.
      host_sizes: more input sizes for `host_augment` (data='pipeline').
      peak_tflops: the device's peak for the MFU (0: no MFU).
      report: called with the results so far after each measurement, so that a caller can
        keep them if a later one never ends.
    """
    b, k = config.batch_size, config.num_neighbors
    model = models.create_model(config)
    tx = create_optimizer(config, steps_per_epoch=1000)
    report = report or (lambda results: None)
    if data == "pipeline":
        train_data = _open_data(config)
        table, images = train_data.table, train_data.images
    else:
        train_data = None
        table = random_inputs.random_table(config, num_rows)
        images = random_inputs.random_train_images(config, num_rows)
    num_rows = table.num_rows
    train_rows = {"train_labels": table.labels, "train_neighbors": table.knn}
    state = create_train_state(config, model, tx, num_rows)
    bank_config = config.copy_and_resolve_references()
    bank_config.neighbors = config_fields.MEMORY_BANK
    bank_state = create_train_state(bank_config, model, tx, num_rows)
    bank_state = bank_state.replace(bank=random_inputs.random_bank(config, num_rows))
    batch = jax.device_put(random_inputs.random_train_batch(config, num_rows))

    results = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "backbone": config.model.backbone,
        "dtype": config.model.dtype,
        "input_size": config.input_size,
        "batch_size": b,
        "num_neighbors": k,
        "data": data,
    }

    def record(name, value):
        results[name] = value
        _add_ratios(results)
        results["device_memory"] = _device_memory()
        report(results)

    for name, step_fn, images_per_example, start in (
        (
            "ldl_step",
            steps.compile_train_step(model, tx, config, **train_rows),
            1 + k,
            state,
        ),
        (
            "bank_step",
            steps.compile_train_step(model, tx, bank_config, **train_rows),
            1,
            bank_state,
        ),
        ("floor", make_floor_step(model, tx), 1 + k, state),
        ("plain_step", make_plain_step(model, tx), 1, state),
    ):
        fresh = jax.tree.map(jnp.copy, start)
        compiled, compile_seconds = _compile(step_fn, fresh, batch)
        seconds, _ = _time_steps(compiled, fresh, _repeat(batch), num_steps)
        flops = _flops(compiled)
        entry = {
            "seconds_per_step": seconds,
            "central_images_per_s": b / seconds,
            "all_images_per_s": b * images_per_example / seconds,
            "compile_seconds": compile_seconds,
            "gflops_per_step": None if flops is None else flops / 1e9,
        }
        if flops is not None and peak_tflops > 0:
            entry["mfu"] = flops / seconds / (peak_tflops * 1e12)
        record(name, entry)
    placements = {}
    if train_data is not None:
        config.data.placement = "host"
        host_feed = train_data.feed(parallel.MeshParallel())
        placements["host"] = measure_feed(
            config, model, tx, state, host_feed, train_rows, num_steps
        )
        record("placements", placements)
    device_feed = feeds.device_feed(config, table, images, parallel.MeshParallel())
    placements["device"] = measure_feed(
        config, model, tx, state, device_feed, train_rows, num_steps
    )
    record("placements", placements)
    if train_data is not None:
        results["device_step_over_host_step"] = (
            placements["device"]["step_alone_seconds"] / placements["host"]["step_alone_seconds"]
        )
        sizes = [config.input_size, *(int(size) for size in host_sizes)]
        results["host_augment"] = {
            str(size): host_images_per_s(config, size, num_steps) for size in sizes
        }
    results["peak_host_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["device_memory"] = _device_memory()
    return results


def main(argv):
    del argv
    config = FLAGS.config
    if FLAGS.dtype:
        config.model.dtype = FLAGS.dtype
    if FLAGS.batch_size:
        config.batch_size = FLAGS.batch_size
    results = benchmark(
        config,
        data=FLAGS.data,
        num_steps=FLAGS.steps,
        num_rows=FLAGS.num_rows,
        host_sizes=FLAGS.host_sizes,
        peak_tflops=FLAGS.peak_tflops,
    )
    text = json.dumps(results, indent=2)
    print(text)
    if FLAGS.out:
        pathlib.Path(FLAGS.out).write_text(text)


if __name__ == "__main__":
    app.run(main)
