"""Throughput of the LDL train step against its compute floor, in one process.

  python tools/benchmark.py --config=configs/synthetic.py [--dtype=bfloat16] [--batch_size=64]
      [--data=pipeline|device] [--steps=30] [--out=bench.json]

Prints one JSON object. Timed, after compilation, as the median of `--steps` steps each:
- `ldl_step`: the full LDLVA train step (central images/s and all 1+K images/s);
- `floor`: the least any LDLVA step must do with the same model and dtype: a forward+backward
  pass and Adam on B images plus a train-mode forward pass on B*K, as one compiled program;
  `floor_ratio = ldl_step / floor`;
- `plain_step`: a cross-entropy step on B images, for reference;
- `bank_step`: the LDLVA step with the neighbour memory bank (`config.neighbors =
  'memory_bank'`) on the same batch, which reads the K neighbours from the bank instead of
  running the backbone on them; `bank_speedup = ldl_step / bank_step` (seconds);
- with `--data=pipeline`: the tf.data pipeline alone, and the step fed by it (end to end);
- compile time, peak host memory, and on a GPU the device memory and the MFU from XLA's cost
  analysis (with `--peak_tflops`).
`--data=device` feeds random device-resident batches and never imports TensorFlow, so it runs
where TensorFlow is absent.
"""

import json
import pathlib
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from ml_collections import config_flags

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from ldl_jax import memory_bank, models, steps, testing  # noqa: E402
from ldl_jax.train_state import create_optimizer, create_train_state  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config to benchmark.", lock_config=False)
flags.DEFINE_enum("data", "device", ["device", "pipeline"], "Where batches come from.")
flags.DEFINE_string("dtype", None, "Override config.model.dtype.")
flags.DEFINE_integer("batch_size", None, "Override config.batch_size.")
flags.DEFINE_integer("steps", 30, "Timed steps per measurement (after one warm-up).")
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


class PipelineData:
    """The config's training data through `ldl_jax.data` (imports TensorFlow)."""

    def __init__(self, config):
        from ldl_jax import data

        self.config = config
        self.data = data.open_train_data(config).decode(eval_sets=False)
        self.table = self.data.table

    def batches(self):
        return self.data.train_batches()

    def device_batches(self):
        return self.data.train_batches(place=jax.device_put)

    def measure(self, num_steps: int) -> dict:
        """Images/s of the pipeline alone (host batches, 1 + K images per example)."""
        batches = self.batches()
        next(batches)
        start = time.perf_counter()
        for _ in range(num_steps):
            next(batches)
        seconds = (time.perf_counter() - start) / num_steps
        per_batch = self.config.batch_size * (1 + self.config.num_neighbors)
        return {"seconds_per_batch": seconds, "all_images_per_s": per_batch / seconds}


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


def _flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per device
        analysis = analysis[0] if analysis else None
    return float(analysis["flops"]) if analysis and "flops" in analysis else None


def _repeat(batch):
    while True:
        yield batch


def _device_memory() -> dict | None:
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {key: stats[key] for key in ("peak_bytes_in_use", "bytes_limit") if key in stats}


def benchmark(config) -> dict:
    b, k = config.batch_size, config.num_neighbors
    model = models.create_model(config)
    tx = create_optimizer(config, steps_per_epoch=1000)
    pipeline = None
    if FLAGS.data == "pipeline":
        pipeline = PipelineData(config)
        num_rows = pipeline.table.num_rows
        train_labels = pipeline.table.labels
    else:
        num_rows = FLAGS.num_rows
        train_labels = np.arange(num_rows) % config.num_classes
    state = create_train_state(config, model, tx, num_rows)
    bank_config = config.copy_and_resolve_references()
    bank_config.neighbors = memory_bank.MEMORY_BANK
    bank_state = create_train_state(bank_config, model, tx, num_rows)
    bank_state = bank_state.replace(bank=testing.random_bank(config, num_rows))
    batch = jax.device_put(testing.random_train_batch(config, num_rows))

    results = {
        "backend": jax.default_backend(),
        "device": jax.devices()[0].device_kind,
        "backbone": config.model.backbone,
        "dtype": config.model.dtype,
        "input_size": config.input_size,
        "batch_size": b,
        "num_neighbors": k,
        "data": FLAGS.data,
    }
    timed = {}
    for name, step_fn, images_per_example, start in (
        (
            "ldl_step",
            steps.compile_train_step(model, tx, config, train_labels=train_labels),
            1 + k,
            state,
        ),
        (
            "bank_step",
            steps.compile_train_step(model, tx, bank_config, train_labels=train_labels),
            1,
            bank_state,
        ),
        ("floor", make_floor_step(model, tx), 1 + k, state),
        ("plain_step", make_plain_step(model, tx), 1, state),
    ):
        fresh = jax.tree.map(jnp.copy, start)
        compiled, compile_seconds = _compile(step_fn, fresh, batch)
        seconds, _ = _time_steps(compiled, fresh, _repeat(batch), FLAGS.steps)
        timed[name] = compiled
        flops = _flops(compiled)
        entry = {
            "seconds_per_step": seconds,
            "central_images_per_s": b / seconds,
            "all_images_per_s": b * images_per_example / seconds,
            "compile_seconds": compile_seconds,
            "gflops_per_step": None if flops is None else flops / 1e9,
        }
        if flops is not None and FLAGS.peak_tflops > 0:
            entry["mfu"] = flops / seconds / (FLAGS.peak_tflops * 1e12)
        results[name] = entry
    results["floor_ratio"] = (
        results["ldl_step"]["seconds_per_step"] / results["floor"]["seconds_per_step"]
    )
    results["bank_speedup"] = (
        results["ldl_step"]["seconds_per_step"] / results["bank_step"]["seconds_per_step"]
    )
    if results["bank_step"]["gflops_per_step"]:
        results["bank_flops_ratio"] = (
            results["ldl_step"]["gflops_per_step"] / results["bank_step"]["gflops_per_step"]
        )
    if results["floor"]["gflops_per_step"]:
        # What the method itself adds over the floor (AdaptiveSimNet, losses, updates).
        results["floor_flops_ratio"] = (
            results["ldl_step"]["gflops_per_step"] / results["floor"]["gflops_per_step"]
        )

    if pipeline is not None:
        results["pipeline"] = pipeline.measure(FLAGS.steps)
        state = jax.tree.map(jnp.copy, state)
        batches = pipeline.device_batches()
        next(batches)
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            state, metrics = timed["ldl_step"](state, next(batches))
        jax.block_until_ready(metrics)
        seconds = (time.perf_counter() - start) / FLAGS.steps
        results["end_to_end"] = {
            "seconds_per_step": seconds,
            "all_images_per_s": b * (1 + k) / seconds,
            "input_bound": seconds > 1.05 * results["ldl_step"]["seconds_per_step"],
        }
        results["pipeline_to_step_ratio"] = (
            results["pipeline"]["all_images_per_s"] / results["ldl_step"]["all_images_per_s"]
        )
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
    results = benchmark(config)
    text = json.dumps(results, indent=2)
    print(text)
    if FLAGS.out:
        pathlib.Path(FLAGS.out).write_text(text)


if __name__ == "__main__":
    app.run(main)
