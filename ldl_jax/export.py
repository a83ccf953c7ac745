"""Exports a trained model as a TensorFlow SavedModel (and optionally TFLite) for deployment.

  python -m ldl_jax.export --workdir=runs/synthetic --out=exported [--checkpoint=best] [--tflite]

The SavedModel's `serving_default` takes a uint8 image batch (n, S, S, 3), S the config's
`input_size`, already cropped to the face, and returns the (n, C) class probabilities;
`class_names.json` beside it names the columns. Normalisation is inside the exported function.
"""

import json
import pathlib

import tensorflow as tf
from absl import app, flags
from jax.experimental import jax2tf

from ldl_jax import inference

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (modules import cleanly)."""
    flags.DEFINE_string("workdir", None, "The training run's workdir.")
    flags.DEFINE_string("out", None, "Folder for the SavedModel (created; must not exist).")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
    flags.DEFINE_bool("tflite", False, "Also write model.tflite next to the SavedModel.")


def export_saved_model(model: inference.InferenceModel, out, *, tflite: bool = False) -> dict:
    """Writes the SavedModel (and `model.tflite` if asked) into `out`; returns the paths."""
    out = pathlib.Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new --out folder")
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    model = inference.load(FLAGS.workdir, FLAGS.checkpoint)
    paths = export_saved_model(model, FLAGS.out, tflite=FLAGS.tflite)
    print(json.dumps({**paths, "step": model.step, "class_names": model.class_names}, indent=2))


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir", "out"])
    app.run(main)
