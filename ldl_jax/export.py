"""Exports a trained model for deployment: a TensorFlow SavedModel (and optionally TFLite),
or ONNX.

  python -m ldl_jax.export --workdir=runs/synthetic --out=exported [--checkpoint=best] [--tflite]
  python -m ldl_jax.export --workdir=runs/synthetic --out=exported_onnx --format=onnx

Either takes a uint8 image batch (n, S, S, 3), S the config's `input_size`, already cropped to
the face, and returns the (n, C) class probabilities, for any n; `class_names.json` beside it
names the columns. Normalisation is inside the exported function.
"""

import contextlib
import io
import json
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from absl import app, flags
from jax import lax
from jax.experimental import jax2tf
from jax.extend import core as jax_core

from ldl_jax import console, inference

FORMATS = ("saved_model", "onnx")

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (modules import cleanly)."""
    flags.DEFINE_string("workdir", None, "The training run's workdir.")
    flags.DEFINE_string("out", None, "Folder for the exported model (created; must not exist).")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
    flags.DEFINE_enum("format", "saved_model", FORMATS, "SavedModel, or ONNX (model.onnx).")
    flags.DEFINE_bool("tflite", False, "Also write model.tflite next to the SavedModel.")


def new_folder(out) -> pathlib.Path:
    """`out` as a path, after checking that it does not exist: an export never writes into an
    earlier one."""
    out = pathlib.Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new --out folder")
    return out


def export_saved_model(model: inference.InferenceModel, out, *, tflite: bool = False) -> dict:
    """Writes the SavedModel (and `model.tflite` if asked) into `out`; returns the paths."""
    out = new_folder(out)
    size = model.input_size
    # The batch dimension stays symbolic, so one SavedModel serves any batch size.
    probabilities = jax2tf.convert(
        lambda images: model.apply_probabilities(model.variables, images),
        polymorphic_shapes=[f"(b, {size}, {size}, 3)"],
        with_gradient=False,
    )
    module = tf.Module()
    module.serve = tf.function(
        lambda images: {"probabilities": probabilities(images)},
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8, name="images")],
        autograph=False,
    )
    tf.saved_model.save(module, str(out), signatures={"serving_default": module.serve})
    (out / "class_names.json").write_text(json.dumps(model.class_names))
    paths = {"saved_model": str(out)}
    if tflite:
        converter = tf.lite.TFLiteConverter.from_saved_model(str(out))
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS,
            tf.lite.OpsSet.SELECT_TF_OPS,
        ]
        tflite_path = out / "model.tflite"
        tflite_path.write_bytes(converter.convert())
        paths["tflite"] = str(tflite_path)
    return paths


def export_onnx(model: inference.InferenceModel, out) -> dict:
    """Writes `model.onnx` (input "images", output "probabilities", batch size dynamic) into
    `out` with jax2onnx; returns its path.

    The model is traced to a jaxpr here, outside jax2onnx, and jax2onnx converts a replay of
    that jaxpr (`_replay`): while it traces, jax2onnx swaps in its own `flax.linen.max_pool`,
    which takes the window shape by keyword only (the backbones pass it by position).
    """
    out = new_folder(out)
    size = model.input_size
    images = jax.ShapeDtypeStruct(jax.export.symbolic_shape(f"batch, {size}, {size}, 3"), np.uint8)
    traced = jax.make_jaxpr(lambda batch: model.apply_probabilities(model.variables, batch))(images)
    out.mkdir(parents=True)
    path = out / "model.onnx"
    # jax2onnx prints "DEBUG: ..." lines and a warning with a traceback for each of its plugins
    # that does not import with this JAX (none the backbones use); onnx_ir warns of every
    # intermediate value it writes without a shape (the graph's input and output keep theirs).
    with (
        contextlib.redirect_stdout(io.StringIO()),
        _logger_level(logging.ERROR, "jax2onnx.plugins.plugin_system", "onnx_ir.serde"),
    ):
        from jax2onnx import to_onnx  # only this export needs it

        to_onnx(
            lambda batch: _replay(traced, batch)[0],
            [images],
            model_name="ldl_jax",
            input_names=["images"],
            output_names=["probabilities"],
            return_mode="file",
            output_path=str(path),
        )
    (out / "class_names.json").write_text(json.dumps(model.class_names))
    return {"onnx": str(path)}


@contextlib.contextmanager
def _logger_level(level: int, *names: str):
    """Sets the level of the standard loggers `names` for the block."""
    loggers = [logging.getLogger(name) for name in names]
    saved = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level_before in zip(loggers, saved, strict=True):
            logger.setLevel(level_before)


def _replay(traced: jax_core.ClosedJaxpr, *args) -> list:
    """Evaluates a closed jaxpr equation by equation (as `jax.core.eval_jaxpr` does), with each
    max pool rewritten by `_max_pool_nhwc` for jax2onnx."""
    env = dict(zip(traced.jaxpr.constvars, traced.consts, strict=True))
    env.update(zip(traced.jaxpr.invars, args, strict=True))

    def read(var):
        return var.val if isinstance(var, jax_core.Literal) else env[var]

    for eqn in traced.jaxpr.eqns:
        inputs = [read(var) for var in eqn.invars]
        if eqn.primitive is lax.reduce_window_max_p:
            outputs = [_max_pool_nhwc(*inputs, **eqn.params)]
        else:
            outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
            outputs = outputs if eqn.primitive.multiple_results else [outputs]
        env.update(zip(eqn.outvars, outputs, strict=True))
    return [read(var) for var in traced.jaxpr.outvars]


def _max_pool_nhwc(
    x, *, window_dimensions, window_strides, padding, base_dilation, window_dilation
):
    """`lax.reduce_window_max` over the H and W axes of an NHWC batch, as a pool over
    (N·C, H, W): jax2onnx turns every axis of a pooled array into an ONNX MaxPool spatial
    axis, and ONNX Runtime pools over at most three."""
    if (
        x.ndim != 4
        or window_dimensions[0::3] != (1, 1)
        or window_strides[0::3] != (1, 1)
        or tuple(padding[0]) + tuple(padding[3]) != (0, 0, 0, 0)
        or set(base_dilation) | set(window_dilation) != {1}
    ):
        raise NotImplementedError(f"ONNX export: unsupported max pool {window_dimensions}")
    n, h, w, c = x.shape
    rows = jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w)
    pooled = lax.reduce_window(
        rows,
        -jnp.inf,
        lax.max,
        (1, *window_dimensions[1:3]),
        (1, *window_strides[1:3]),
        ((0, 0), tuple(padding[1]), tuple(padding[2])),
    )
    return pooled.reshape(n, c, *pooled.shape[1:]).transpose(0, 2, 3, 1)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.tflite and FLAGS.format != "saved_model":
        raise app.UsageError("--tflite goes with --format=saved_model")
    console.setup(verbose_logs=FLAGS.verbosity >= 1)  # library logs off the console
    with console.input_errors_end_the_command():
        new_folder(FLAGS.out)  # before the model is loaded
        model = inference.load(FLAGS.workdir, FLAGS.checkpoint)
        if FLAGS.format == "onnx":
            paths = export_onnx(model, FLAGS.out)
        else:
            paths = export_saved_model(model, FLAGS.out, tflite=FLAGS.tflite)
    print(json.dumps({**paths, "step": model.step, "class_names": model.class_names}, indent=2))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir", "out"])
    app.run(main)
