"""Predicts the expression in image and video files with a trained model.

  python -m ldl_jax.predict --workdir=runs/synthetic [--checkpoint=best] [--out=preds.csv] \\
      [--detect_faces] [--every_n_frames=5] [--annotated_video=annotated.mp4] \\
      photo.jpg folder/ clip.mp4 ...

Prints, per image, per analysed video frame or per detected face, the predicted class and the
full label distribution; `--out` also writes them as CSV or JSON (by its extension), row by
row. Without `--detect_faces` each image (or frame) is taken as a face crop, as in training.
With it, MTCNN (`face_detect`) finds each face and its five landmarks once, and
`face_align.align_face` maps them onto the training template at the model's input size;
images and frames without a face are reported as such.

Images are decoded as evaluation decodes them (`photos.read_upright`, TensorFlow) and turned
upright by their EXIF orientation. Work streams: files are read, cropped and predicted a batch
at a time, so memory does not grow with the number of files. A file that cannot be read is
reported on one line of stderr and skipped; the exit status is then 1.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
import os
import pathlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from absl import app, flags

from ldl_jax import console

# TensorFlow (the shared decoder) prints banners as it loads: they go to the held log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
with console.native_load_held():
    from ldl_jax import face_align, inference, photos, video

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif")
NO_FACE = "no face found"
OUT_SUFFIXES = (".csv", ".json")

FLAGS = flags.FLAGS


def define_flags():
    """Command-line flags, defined only when run as a program (modules import cleanly)."""
    flags.DEFINE_string("workdir", None, "The training run's workdir.")
    flags.DEFINE_string("checkpoint", "latest", "'latest', 'best' or a step number.")
    flags.DEFINE_string("out", None, "Also write the predictions to this .csv or .json file.")
    flags.DEFINE_bool("detect_faces", False, "Find and align faces (MTCNN); predict each one.")
    flags.DEFINE_integer("batch_size", 64, "Faces per compiled call (and per streamed batch).")
    flags.DEFINE_integer("every_n_frames", 1, "In videos, analyse frames 0, N, 2N, ...")
    flags.DEFINE_string(
        "annotated_video", None, "With one video input: write a copy (.avi or .mp4) with labels."
    )


def list_inputs(paths: Sequence[str]) -> list[pathlib.Path]:
    """The files named, and the images and videos found (recursively, sorted) in the folders
    named."""
    suffixes = IMAGE_SUFFIXES + video.VIDEO_SUFFIXES
    found = []
    for name in paths:
        path = pathlib.Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path} is neither a file nor a folder")
    return found


def face_items(base: dict, image: np.ndarray, size: int, detector) -> Iterator[tuple]:
    """(record, crop) pairs of one image or frame: the whole image resized as in evaluation
    without a detector, else each detected face aligned to `size` (largest first), or one
    record without a crop if no face is found."""
    if detector is None:
        from ldl_jax.data import images  # TensorFlow: the test transform's resize

        yield {**base, "face": None}, np.asarray(images.resize_uint8(image, size))
        return
    faces = detector.detect(image)
    if not faces:
        yield {**base, "face": NO_FACE}, None
    for face in faces:
        yield {**base, "face": list(face.box)}, face_align.align_face(image, face.landmarks, size)


def input_items(
    paths: Iterable[pathlib.Path],
    size: int,
    *,
    detector=None,
    every_n_frames: int = 1,
    on_unreadable: Callable[[str], None],
) -> Iterator[tuple]:
    """(record, crop or None) pairs of every input, lazily: one image or frame is decoded at
    a time. An unreadable file goes to `on_unreadable(message)` and is skipped."""
    for path in paths:
        try:
            if video.is_video(path):
                for frame in video.read_frames(path, every_n_frames):
                    base = {"path": str(path), "frame": frame.index, "time_s": frame.time_s}
                    yield from face_items(base, frame.image, size, detector)
            else:
                image = photos.read_upright(path)
                yield from face_items({"path": str(path)}, image, size, detector)
        except (photos.UnreadableImage, video.UnreadableVideo) as error:
            on_unreadable(str(error))


def predict_items(model: inference.InferenceModel, items: Iterable[tuple], batch_size: int):
    """Completed records, in order, predicted `batch_size` items at a time (one compiled
    shape): only one batch of crops is held at once."""
    items = iter(items)
    while chunk := list(itertools.islice(items, batch_size)):
        crops = [crop for _, crop in chunk if crop is not None]
        probabilities = iter(
            model.probabilities(np.stack(crops), batch_size=batch_size) if crops else ()
        )
        for record, crop in chunk:
            probs = None if crop is None else next(probabilities)
            yield with_prediction(record, probs, model.class_names)


def with_prediction(record: dict, probs, class_names: Sequence[str]) -> dict:
    """`record` with "prediction" and "probabilities" (None for a record without a face)."""
    if probs is None:
        return {**record, "prediction": None, "probabilities": None}
    return {
        **record,
        "prediction": class_names[int(np.argmax(probs))],
        "probabilities": {name: float(p) for name, p in zip(class_names, probs, strict=True)},
    }


def predict_files(
    model: inference.InferenceModel,
    paths: Iterable[pathlib.Path],
    *,
    detector=None,
    batch_size: int = 64,
    every_n_frames: int = 1,
    on_unreadable: Callable[[str], None],
) -> Iterator[dict]:
    """One record per image, analysed frame or detected face, streamed in input order.

    A record has "path", "face" (None without a detector, the box [x, y, w, h], or NO_FACE),
    "prediction" and "probabilities" (class name -> probability; both None for NO_FACE), and
    for a video frame also "frame" (its index) and "time_s".
    """
    items = input_items(
        paths,
        model.input_size,
        detector=detector,
        every_n_frames=every_n_frames,
        on_unreadable=on_unreadable,
    )
    return predict_items(model, items, batch_size)


def format_record(record: dict) -> str:
    where = record["path"]
    if "frame" in record:
        where += f" frame={record['frame']} t={record['time_s']:.2f}s"
    face = "" if record["face"] is None else f" face={record['face']}"
    if record["prediction"] is None:
        return f"{where}:{face}"
    distribution = " ".join(f"{name}={p:.3f}" for name, p in record["probabilities"].items())
    return f"{where}:{face} {record['prediction']}  [{distribution}]"


@contextlib.contextmanager
def record_writer(out, class_names: Sequence[str]):
    """Yields `write(record)`, which adds a record to `out` at once: a CSV row, or an element
    of a JSON array (closed when the block ends)."""
    out = pathlib.Path(out)
    if out.suffix not in OUT_SUFFIXES:
        raise ValueError(f"--out={out}: use a .csv or .json file")
    with out.open("w", newline="") as file:
        if out.suffix == ".json":
            written = 0

            def write_element(record):
                nonlocal written
                file.write(("[\n" if written == 0 else ",\n") + json.dumps(record))
                written += 1

            yield write_element
            file.write("\n]\n" if written else "[]\n")
            return
        writer = csv.writer(file)
        writer.writerow(["path", "frame", "time_s", "face", "prediction", *class_names])

        def write_row(record):
            face = record["face"]
            probs = record["probabilities"] or {}
            writer.writerow(
                [
                    record["path"],
                    record.get("frame", ""),
                    f"{record['time_s']:.3f}" if "time_s" in record else "",
                    " ".join(map(str, face)) if isinstance(face, list) else (face or ""),
                    record["prediction"] or "",
                ]
                + [f"{probs[name]:.6f}" if probs else "" for name in class_names]
            )

        yield write_row


def check_flags(paths: Sequence[pathlib.Path]) -> None:
    """Flag errors, before the model is loaded."""
    if not paths:
        raise app.UsageError("name at least one image or video file, or a folder")
    if FLAGS.out and pathlib.Path(FLAGS.out).suffix not in OUT_SUFFIXES:
        raise ValueError(f"--out={FLAGS.out}: use a .csv or .json file")
    if FLAGS.every_n_frames < 1:
        raise ValueError(f"--every_n_frames={FLAGS.every_n_frames}: must be at least 1")
    if FLAGS.annotated_video:
        videos = [path for path in paths if video.is_video(path)]
        if len(videos) != 1:
            raise ValueError(
                f"--annotated_video needs exactly one video input; {len(videos)} given"
            )
        if pathlib.Path(FLAGS.annotated_video).suffix.lower() not in (".avi", ".mp4"):
            raise ValueError(f"--annotated_video={FLAGS.annotated_video}: use .avi or .mp4")


def main(argv):
    console.setup(verbose_logs=FLAGS.verbosity >= 1)  # library logs off the console
    with console.input_errors_end_the_command():
        paths = list_inputs(argv[1:])
        check_flags(paths)
        model = inference.load(FLAGS.workdir, FLAGS.checkpoint)
    detector = None
    if FLAGS.detect_faces:
        from ldl_jax import face_detect

        detector = face_detect.FaceDetector()
    unreadable = []

    def report(message):
        unreadable.append(message)
        print(f"skipped: {message}", file=sys.stderr)

    video_records = []
    with contextlib.ExitStack() as stack:
        write = (
            stack.enter_context(record_writer(FLAGS.out, model.class_names)) if FLAGS.out else None
        )
        for record in predict_files(
            model,
            paths,
            detector=detector,
            batch_size=FLAGS.batch_size,
            every_n_frames=FLAGS.every_n_frames,
            on_unreadable=report,
        ):
            print(format_record(record), file=sys.stdout)
            if write:
                write(record)
            if FLAGS.annotated_video and "frame" in record:
                video_records.append(record)
    if FLAGS.annotated_video and video_records:
        (source,) = {record["path"] for record in video_records}
        frames = video.write_annotated(source, video_records, FLAGS.annotated_video)
        print(f"{FLAGS.annotated_video}: {frames} frames annotated", file=sys.stdout)
    if unreadable:
        print(f"{len(unreadable)} of {len(paths)} files skipped as unreadable", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("workdir")
    app.run(main)
