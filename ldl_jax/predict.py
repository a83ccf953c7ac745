"""Predicts the expression of image files with a trained model.

  python -m ldl_jax.predict --workdir=runs/synthetic [--checkpoint=best] [--out=preds.csv] \
      [--detect_faces] photo.jpg folder/ ...

Prints, per image (or per detected face), the predicted class and the full label distribution;
`--out` also writes them as CSV or JSON (by its extension). Without `--detect_faces` each image
is taken as an aligned face crop, as in training. With it, OpenCV's bundled frontal-face cascade
finds faces, each is cropped with a margin and predicted on its own, and images without a face
are reported as such.
"""

import csv
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image

from ldl_jax import inference

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Training crops (RAF-DB aligned, AffectNet) show the whole face with a little background.
FACE_MARGIN = 0.2
NO_FACE = "no face found"

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (modules import cleanly)."""
    flags.DEFINE_string("workdir", None, "The training run's workdir.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
    flags.DEFINE_string("out", None, "Also write the predictions to this .csv or .json file.")
    flags.DEFINE_bool("detect_faces", False, "Find faces with OpenCV and predict each one.")
    flags.DEFINE_integer("batch_size", 64, "Images per compiled call.")


def list_images(paths: Sequence[str]) -> list[pathlib.Path]:
    """The image files named, and those found (recursively, sorted) in the folders named."""
    images = []
    for name in paths:
        path = pathlib.Path(name)
        if path.is_dir():
            images.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither an image file nor a folder")
    return images


def read_rgb(path: pathlib.Path) -> np.ndarray:
    """(H, W, 3) uint8; a clear error names a file that is not a readable image."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ValueError(f"{path}: not a readable image ({error})") from error


def detect_faces(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes (x, y, w, h) of frontal faces, largest first, from OpenCV's Haar cascade."""
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    min_side = max(24, min(image.shape[:2]) // 10)
    boxes = cascade.detectMultiScale(gray, 1.1, 5, minSize=(min_side, min_side))
    return sorted((tuple(int(v) for v in box) for box in boxes), key=lambda b: -b[2] * b[3])


def crop_with_margin(image: np.ndarray, box, margin: float = FACE_MARGIN) -> np.ndarray:
    """A square crop around `box`, widened by `margin` of its size on each side."""
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    center_x, center_y = x + w / 2, y + h / 2
    left = int(round(center_x - side / 2))
    top = int(round(center_y - side / 2))
    height, width = image.shape[:2]
    return image[max(top, 0) : min(top + side, height), max(left, 0) : min(left + side, width)]


def predict_files(
    model: inference.InferenceModel,
    paths: Sequence[pathlib.Path],
    *,
    detect: bool = False,
    batch_size: int = 64,
) -> list[dict]:
    """One record per image, or per detected face; faceless images get a record saying so."""
    from ldl_jax.data import images  # TensorFlow: the same resize as the test transform

    records, crops = [], []
    for path in paths:
        image = read_rgb(path)
        if not detect:
            records.append({"path": str(path), "face": None})
            crops.append(image)
            continue
        boxes = detect_faces(image)
        if not boxes:
            records.append({"path": str(path), "face": NO_FACE})
        for box in boxes:
            records.append({"path": str(path), "face": list(box)})
            crops.append(crop_with_margin(image, box))
    resized = (
        np.stack([np.asarray(images.resize_uint8(crop, model.input_size)) for crop in crops])
        if crops
        else np.zeros((0, model.input_size, model.input_size, 3), np.uint8)
    )
    probabilities = iter(model.probabilities(resized, batch_size=batch_size))
    for record in records:
        if record["face"] == NO_FACE:
            record.update(prediction=None, probabilities=None)
            continue
        probs = next(probabilities)
        record["prediction"] = model.class_names[int(np.argmax(probs))]
        record["probabilities"] = {
            name: float(p) for name, p in zip(model.class_names, probs, strict=True)
        }
    return records


def format_record(record: dict) -> str:
    face = "" if record["face"] is None else f" face={record['face']}"
    if record["prediction"] is None:
        return f"{record['path']}:{face}"
    distribution = " ".join(f"{name}={p:.3f}" for name, p in record["probabilities"].items())
    return f"{record['path']}:{face} {record['prediction']}  [{distribution}]"


def write_records(records: list[dict], out: pathlib.Path, class_names: Sequence[str]) -> None:
    if out.suffix == ".json":
        out.write_text(json.dumps(records, indent=2))
        return
    if out.suffix != ".csv":
        raise ValueError(f"--out={out}: use a .csv or .json file")
    with out.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["path", "face", "prediction", *class_names])
        for record in records:
            probs = record["probabilities"] or {}
            face = (
                record["face"]
                if isinstance(record["face"], str)
                else ("" if record["face"] is None else " ".join(map(str, record["face"])))
            )
            writer.writerow(
                [record["path"], face, record["prediction"] or ""]
                + [f"{probs[name]:.6f}" if probs else "" for name in class_names]
            )


def main(argv):
    paths = list_images(argv[1:])
    if not paths:
        raise app.UsageError("name at least one image file or folder")
    if FLAGS.out and pathlib.Path(FLAGS.out).suffix not in (".csv", ".json"):
        raise app.UsageError(f"--out={FLAGS.out}: use a .csv or .json file")
    model = inference.load(FLAGS.workdir, FLAGS.checkpoint)
    records = predict_files(model, paths, detect=FLAGS.detect_faces, batch_size=FLAGS.batch_size)
    for record in records:
        print(format_record(record), file=sys.stdout)
    if FLAGS.out:
        write_records(records, pathlib.Path(FLAGS.out), model.class_names)


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("workdir")
    app.run(main)
