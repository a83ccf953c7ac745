"""Trains or evaluates LDLVA. Intentionally kept short: the logic lives in `ldl_jax.train`.

  python -m ldl_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
  python -m ldl_jax.main --config=configs/resnet50_raf.py --workdir=runs/raf \\
      --config.data.image_dir=/data/raf/aligned --config.batch_size=64
  python -m ldl_jax.main --config=configs/resnet50_raf.py --workdir=runs/raf --mode=eval \\
      --checkpoint=best
"""

import jax
import tensorflow as tf
from absl import app, flags, logging
from ml_collections import config_flags

from ldl_jax import train, va_train

TRAINERS = {"ldl": train, "va": va_train}  # config.task -> its loop module

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resuming if possible) or evaluate.")
flags.DEFINE_string("checkpoint", "latest", "For --mode=eval: 'latest', 'best' or a step.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.DEFINE_bool(
    "distributed",
    False,
    "Several hosts: call jax.distributed.initialize(), from the three flags below or, where "
    "they are unset, from the cluster's environment (SLURM, Open MPI, Kubernetes, ...).",
)
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (with --distributed).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --distributed).")
flags.DEFINE_integer("process_id", None, "This process's index (with --distributed).")
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed():
    """Joins the processes of a multi-host run; CPU processes talk over gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes,
        process_id=FLAGS.process_id,
    )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # TensorFlow only feeds data: keep it off the accelerators JAX uses.
    tf.config.set_visible_devices([], "GPU")
    if FLAGS.distributed:
        initialize_distributed()
    logging.info(
        "JAX process %d / %d, devices: %s", jax.process_index(), jax.process_count(), jax.devices()
    )
    task = FLAGS.config.get("task", "ldl")
    if task not in TRAINERS:
        raise app.UsageError(f"config.task={task!r} is not one of {sorted(TRAINERS)}")
    if FLAGS.mode == "train":
        TRAINERS[task].train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        TRAINERS[task].evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)


if __name__ == "__main__":
    app.run(main)
