"""Trains or evaluates LDLVA. Intentionally kept short: the logic lives in `ldl_jax.train`.

Errors in the input (flags, config, data files, a checkpoint of another model, a workdir in use
or not writable) end with one line on stderr naming the culprit and exit code 2; other failures
(a checkpoint that cannot be read or saved, ...) exit 1. Only `--verbose` shows the traceback. A
training run holds `WORKDIR/lock.json` while it runs.

The console shows progress, results, warnings and errors (`ldl_jax.console`); the full log, the
libraries' INFO lines included, goes to `WORKDIR/train.log` (`--mode=eval`: `eval.log` next to
its results). `--verbose_logs` (or `--verbosity=1`) shows it all on the console too.

  python -m ldl_jax.main --config=configs/synthetic.py --workdir=runs/synthetic
  python -m ldl_jax.main --config=configs/resnet50_raf.py --workdir=runs/raf \\
      --config.data.image_dir=/data/raf/aligned --config.batch_size=64
  python -m ldl_jax.main --config=configs/resnet50_raf.py --workdir=runs/raf --mode=eval \\
      --checkpoint=best
"""

import os
import re
import sys

from ldl_jax import console

# TensorFlow's C++ INFO logs off (set it to 0 to see them); its banners as it loads go to the log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
with console.native_load_held():
    import jax
    import tensorflow as tf
    from absl import app, flags, logging
    from ml_collections import config_flags

    from ldl_jax import checkpointing, train, workdir_lock
    from ldl_jax.data import tables

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
flags.DEFINE_bool("verbose", False, "Show the full traceback of an error.")
flags.DEFINE_bool(
    "verbose_logs",
    False,
    "Show every library's log lines on the console (orbax, JAX, ...); they always go to "
    "WORKDIR/train.log. --verbosity=1 does too, with DEBUG lines.",
)
flags.mark_flags_as_required(["config", "workdir"])

# Errors in what the user gave us (exit code 2); anything else is a runtime failure (1).
INPUT_ERRORS = (
    tables.DataError,
    checkpointing.CheckpointMismatchError,
    workdir_lock.WorkdirLockedError,
    workdir_lock.WorkdirNotWritableError,
    FileNotFoundError,
    ValueError,
    KeyError,
)


def _drop_closed_loop_reports(unraisable) -> None:
    """An unraisable-exception hook without the reports of orbax's abandoned reads and writes.

    orbax runs TensorStore reads and writes in an event loop that it closes as soon as one of
    them fails (a damaged checkpoint, a full disk); the others' completions then hit the closed
    loop ("Event loop is closed"), and its coroutines that never finished report their own
    failure again when they are garbage-collected. Each prints a traceback that says nothing
    the run's warning or `error:` line does not.
    """
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    code = getattr(unraisable.object, "cr_code", None)  # an abandoned coroutine's
    if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
        return
    sys.__unraisablehook__(unraisable)


def parse_flags(argv):
    """absl's flag parsing, with a config typo (`--config.batch_sise=8`) reported in one line."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        console.fail(f"{error}\nRun with --helpfull for the flags.", 2)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        if "--verbose" in argv:
            raise
        suggestion = re.search(r'Did you mean "([\w.]+)" instead of "([\w.]+)"', str(error))
        if suggestion:
            right, wrong = suggestion.groups()
            message = f"config has no field {wrong!r} (did you mean {right!r}?)"
        else:
            message = str(error).replace("\\n", " ").strip("'\" ")
        console.fail(f"bad config override: {message}", 2)


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
    sys.unraisablehook = _drop_closed_loop_reports
    console.setup(verbose_logs=FLAGS.verbose_logs or FLAGS.verbosity >= 1)
    # TensorFlow only feeds data: keep it off the accelerators JAX uses.
    tf.config.set_visible_devices([], "GPU")
    if FLAGS.distributed:
        initialize_distributed()
    console.show_progress(jax.process_index() == 0)
    logging.info(
        "JAX process %d / %d, devices: %s", jax.process_index(), jax.process_count(), jax.devices()
    )
    try:
        if FLAGS.mode == "eval":
            train.evaluate_checkpoint(FLAGS.config, FLAGS.workdir, FLAGS.checkpoint)
        elif jax.process_index() == 0:
            with workdir_lock.hold(FLAGS.workdir):
                train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        else:  # process 0 holds the lock for the whole run
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except INPUT_ERRORS as error:
        if FLAGS.verbose:
            raise
        console.fail(error, 2)
    except Exception as error:  # noqa: BLE001 - one line, unless --verbose
        if FLAGS.verbose:
            raise
        console.fail(f"{type(error).__name__}: {error} (run with --verbose for the traceback)", 1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
