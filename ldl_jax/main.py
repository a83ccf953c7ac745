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

from ldl_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resuming if possible) or evaluate.")
flags.DEFINE_string("checkpoint", "latest", "For --mode=eval: 'latest', 'best' or a step.")
config_flags.DEFINE_config_file("config", None, "Training configuration file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # TensorFlow only feeds data: keep it off the accelerators JAX uses.
    tf.config.set_visible_devices([], "GPU")
    logging.info(
        "JAX process %d / %d, devices: %s", jax.process_index(), jax.process_count(), jax.devices()
    )
    if FLAGS.mode == "train":
        train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
        train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)


if __name__ == "__main__":
    app.run(main)
