"""Runs a few train steps under one parallelism and saves the final state (for test_parallel).

Run as a subprocess: the device count must be fixed (XLA_FLAGS) before JAX is imported.

  python -m tests.parallel_worker --devices=2 --mode=pmap --out=DIR [--placements=host,device]
      [--num_processes=2 --process_id=0 --coordinator=127.0.0.1:PORT] [--neighbors=memory_bank]
  python -m tests.parallel_worker --devices=2 --mode=mesh --data_dir=DATA --workdir=W
      [--placement=device]

Each placement of `--placements` runs the same steps from the same state and writes
DIR/PLACEMENT.npz: 'host' feeds random augmented images, 'device' the same batches' rows of a
random image table placed on the devices (`ldl_jax.data.feeds.DeviceImages`).
"""

import argparse
import os
import pathlib


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, required=True, help="CPU devices per process")
    parser.add_argument("--mode", choices=("mesh", "pmap"), required=True)
    parser.add_argument("--sync_batch_norm", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--neighbors", default="forward", help="config.neighbors")
    parser.add_argument("--out", default="", help="folder for the states after the steps")
    parser.add_argument("--placements", default="host", help="comma-separated: host, device")
    parser.add_argument("--data_dir", default="", help="with --workdir: run the trainer")
    parser.add_argument("--workdir", default="")
    parser.add_argument("--placement", default="auto", help="with --workdir")
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    parser.add_argument("--coordinator", default="")
    return parser.parse_args()


def main():
    args = parse_args()
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import jax
    import numpy as np

    if args.num_processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    from ldl_jax import memory_bank, models, parallel, testing, train, train_state
    from ldl_jax.data import feeds
    from tests.conftest import make_data_config, make_tiny_config

    if args.workdir:
        config = make_data_config(
            pathlib.Path(args.data_dir),
            parallel=args.mode,
            sync_batch_norm=bool(args.sync_batch_norm),
            num_train_steps=args.steps,
        )
        config.data.placement = args.placement
        train.train_and_evaluate(config, args.workdir)
        return
    num_rows = 20
    config = make_tiny_config(
        parallel=args.mode, sync_batch_norm=bool(args.sync_batch_norm), neighbors=args.neighbors
    )
    parallelism = parallel.create(config)
    model = models.create_model(config, bn_axis_name=parallelism.bn_axis_name)
    tx = train_state.create_optimizer(config, steps_per_epoch=5)
    initial_state = jax.device_get(train_state.create_train_state(config, model, tx, num_rows))
    if memory_bank.uses_bank(config):
        initial_state = initial_state.replace(bank=testing.random_bank(config, num_rows))
    train_labels = np.arange(num_rows) % config.num_classes
    for placement in args.placements.split(","):
        if placement == "device":
            resident = feeds.DeviceImages(
                testing.random_train_images(config, num_rows),
                parallelism,
                seed=config.seed,
                pad_size=config.pad_size,
            )
            input_images, place_batch = resident.input_images, resident.place_batch
        else:
            input_images, place_batch = None, parallelism.place_batch
        train_step = parallelism.compile_train_step(
            model, tx, config, train_labels=train_labels, input_images=input_images
        )
        # A fresh copy: placing may alias host memory, which the donating step overwrites.
        state = parallelism.place_state(jax.tree.map(np.copy, initial_state))
        history = []
        for seed in range(args.steps):
            batch = testing.local_slice(testing.random_train_batch(config, num_rows, seed=seed))
            if placement == "device":
                del batch["image"], batch["neighbor_image"]
            elif memory_bank.uses_bank(config):
                del batch["neighbor_image"]
            state, metrics = train_step(state, place_batch(batch))
            history.append(metrics)
        save_state(parallelism, state, history, pathlib.Path(args.out) / f"{placement}.npz")


def save_state(parallelism, state, history, path):
    """Writes the host-level state and each step's metrics (process 0 only)."""
    import jax
    import numpy as np

    host = parallelism.host_state(parallelism.sync_batch_stats(state))
    leaves = jax.tree_util.tree_flatten_with_path(host)[0]
    arrays = {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}
    for name in history[0]:
        values = [np.asarray(metrics[name]) for metrics in history]
        arrays[f"metric/{name}"] = np.array([v.reshape(-1)[0] for v in values])
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)


if __name__ == "__main__":
    main()
