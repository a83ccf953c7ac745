"""Predicts valence and arousal for every row of a CSV and writes its `knn` column.

See docs/METHOD.md §8 and the README's "Reproducing the paper on RAF-DB".

  python -m ldl_jax.annotate_va --workdir=runs/affectnet_va --csv=data/raf/train.csv \\
      --image_dir=RAF/basic/Image/aligned --out=data/raf/train_va.csv [--num_neighbors=20] \\
      [--checkpoint=latest] [--batch_size=64]

The workdir is a VA regressor's (`config.task = "va"`, e.g. configs/resnet18_affectnet_va.py).
Every image of `--csv` (column `subDirectory_filePath`, relative to `--image_dir`) is resized to
the regressor's input size and goes through one compiled function in padded batches; the
predictions become the `valence` and `arousal` columns and `ldl_jax.va_knn` writes `knn` (the
`--num_neighbors` nearest other rows in VA space, L1, nearest first, ties by row index). Every
other column is kept as it was, so a training CSV with `expression` comes out ready for LDLVA.
`--out` may be `--csv` itself: it is replaced only once everything has succeeded.
"""

import os
import pathlib
import sys
from typing import Any

import jax
import numpy as np
from absl import app, flags, logging

from ldl_jax import inference, va_knn, va_model
from ldl_jax.data import images as images_lib
from ldl_jax.data import tables

FLAGS = flags.FLAGS
# Images decoded at once: bounds the host memory of large sets (4,096 at 224 px: 0.6 GB).
DECODE_CHUNK = 4096


def define_flags():
    """Command-line flags, defined only when run as a program (modules import cleanly)."""
    flags.DEFINE_string("workdir", None, "The VA regressor's training workdir.")
    flags.DEFINE_string("csv", None, "The CSV to annotate (column subDirectory_filePath).")
    flags.DEFINE_string("image_dir", None, "The folder subDirectory_filePath is relative to.")
    flags.DEFINE_string("out", None, "Where to write the annotated CSV.")
    flags.DEFINE_integer("num_neighbors", 20, "Neighbours per row in the knn column.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
    flags.DEFINE_integer("batch_size", 64, "Images per compiled call.")


def annotate(
    workdir,
    csv_path,
    image_dir,
    out,
    *,
    num_neighbors: int = 20,
    checkpoint: str = "latest",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Writes `out`: `csv_path` with predicted valence/arousal and their `knn` column.

    Everything is checked before the first image is decoded: the workdir is a VA regressor's
    with that checkpoint, the CSV has `subDirectory_filePath` and every image exists, and
    `num_neighbors` fits the number of rows.

    Returns:
      A summary: rows, checkpoint step, mean and standard deviation of the predictions, out.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be positive")
    restored = inference.restore_regressor(workdir, checkpoint)
    config, model, variables, step = (
        restored.config,
        restored.model,
        restored.variables,
        restored.step,
    )
    frame, paths = tables.read_image_frame(csv_path, image_dir)
    if not 1 <= num_neighbors < len(frame):
        raise ValueError(
            f"num_neighbors={num_neighbors}: {csv_path} has {len(frame)} rows, so 1 <= "
            f"num_neighbors < {len(frame)} (a row is never its own neighbour)"
        )
    predict = jax.jit(va_model.make_va_predict(model))
    chunks = []
    for start in range(0, len(paths), DECODE_CHUNK):
        images = images_lib.load_images(paths[start : start + DECODE_CHUNK], config.input_size)
        chunks.append(inference.predict_va(predict, variables, images, batch_size))
        logging.info("annotated %d / %d images", start + len(images), len(paths))
    va = np.concatenate(chunks)
    knn = va_knn.knn_in_va_space(va, num_neighbors)
    frame = frame.assign(
        valence=[f"{value:.6f}" for value in va[:, 0]],
        arousal=[f"{value:.6f}" for value in va[:, 1]],
        knn=va_knn.format_knn_column(knn),
    )
    out = pathlib.Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    frame.to_csv(temporary, index=False)
    temporary.replace(out)
    return {
        "rows": len(frame),
        "step": step,
        "mean": va.mean(axis=0).tolist(),
        "std": va.std(axis=0).tolist(),
        "num_neighbors": num_neighbors,
        "out": str(out),
    }


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        summary = annotate(
            FLAGS.workdir,
            FLAGS.csv,
            FLAGS.image_dir,
            FLAGS.out,
            num_neighbors=FLAGS.num_neighbors,
            checkpoint=FLAGS.checkpoint,
            batch_size=FLAGS.batch_size,
        )
    except (OSError, ValueError) as error:  # DataError is a ValueError
        print(f"annotate_va: {error}", file=sys.stderr)
        return 1
    print(
        f"wrote {summary['rows']} rows to {summary['out']} (VA regressor step {summary['step']}): "
        f"valence {summary['mean'][0]:+.3f} ± {summary['std'][0]:.3f}, arousal "
        f"{summary['mean'][1]:+.3f} ± {summary['std'][1]:.3f}, {summary['num_neighbors']} "
        "neighbours per row"
    )
    return 0


if __name__ == "__main__":
    define_flags()
    flags.mark_flags_as_required(["workdir", "csv", "image_dir", "out"])
    app.run(main)
