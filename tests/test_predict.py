"""Prediction on image and video files: EXIF orientation, the decoder shared with evaluation,
streaming with unreadable files skipped, and the command line on photos and a video (MTCNN
detection, per-frame rows, the annotated copy, the exit status)."""

import csv
import io
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import ExifTags, Image, ImageOps

from ldl_jax import inference, photos, predict, synthetic, train
from ldl_jax.data import images
from tests.helpers.tiny import make_data_config

PHOTO_SIZE = (360, 280)  # (width, height) of the photo a face is pasted into
FACE_AT, FACE_SIDE = (100, 40), 200


@pytest.fixture(scope="module")
def face_crop(tmp_path_factory):
    """A 96-pixel synthetic face as JPEG bytes: the kind of crop the model is trained on."""
    out = tmp_path_factory.mktemp("faces") / "set"
    synthetic.make_synthetic_fer(out, num_train=21, num_test=1, image_size=96, num_neighbors=20)
    return (out / "images" / "test" / "00000.jpg").read_bytes()


def face_photo(face_crop: bytes) -> np.ndarray:
    """The face enlarged and pasted onto a plain background, as RGB."""
    photo = Image.new("RGB", PHOTO_SIZE, (90, 120, 150))
    face = Image.open(io.BytesIO(face_crop)).resize((FACE_SIDE, FACE_SIDE))
    photo.paste(face, FACE_AT)
    return np.asarray(photo)


def save_with_orientation(pixels: np.ndarray, path, orientation: int) -> None:
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[ExifTags.Base.Orientation] = orientation
    image.save(path, exif=exif)


def test_exif_orientations_turn_the_image_as_pillow_shows_it(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.png"  # lossless: both decoders give equal pixels
        save_with_orientation(stored, path, orientation)
        shown = np.asarray(ImageOps.exif_transpose(Image.open(path)))
        np.testing.assert_array_equal(photos.read_upright(path), shown, err_msg=str(orientation))


def test_predict_gives_the_probabilities_of_eval_on_the_same_jpeg(
    synthetic_dir, trained_workdir, face_crop, tmp_path
):
    (tmp_path / "faces").mkdir()
    jpeg = tmp_path / "faces" / "face.jpg"
    jpeg.write_bytes(face_crop)
    # The file is one where Pillow's decoder (what predict used) and TensorFlow's differ.
    assert not np.array_equal(np.asarray(Image.open(jpeg)), images.decode_rgb(face_crop).numpy())
    (tmp_path / "one.csv").write_text("subDirectory_filePath,expression\nface.jpg,0\n")
    config = make_data_config(synthetic_dir)
    config.data.val_csv = config.data.test_csv = ""
    config.eval_sets = {"one": {"csv": str(tmp_path / "one.csv"), "image_dir": str(jpeg.parent)}}
    evaluated = train.evaluate_checkpoint(config, trained_workdir, "latest")["one"]
    assert evaluated["num_examples"] == 1  # so its mean distribution is the image's

    model = inference.load(trained_workdir, "latest")
    (record,) = predict.predict_files(model, [jpeg], on_unreadable=pytest.fail)
    predicted = [record["probabilities"][name] for name in model.class_names]
    np.testing.assert_allclose(predicted, evaluated["mean_distribution"], rtol=0, atol=1e-6)
    # Pillow's pixels would be caught: they move the probabilities by more than the tolerance.
    pillow = images.resize_uint8(np.asarray(Image.open(jpeg)), model.input_size)
    moved = model.probabilities(np.asarray(pillow)[None])[0] - evaluated["mean_distribution"]
    assert np.abs(moved).max() > 1e-6


def test_files_are_read_a_batch_at_a_time_and_unreadable_ones_skipped(
    trained_workdir, face_crop, tmp_path
):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(face_crop)
    model = inference.load(trained_workdir)
    skipped = []
    records = predict.predict_files(model, paths, batch_size=2, on_unreadable=skipped.append)
    first = [next(records), next(records)]
    # Files of later batches are not read yet: spoiling them now shows in what follows.
    paths[4].unlink()
    paths[5].write_bytes(b"not an image")
    rest = list(records)
    assert [r["path"] for r in first + rest] == [str(p) for p in paths[:4]]
    assert skipped[0] == f"{paths[4]}: cannot read the file (No such file or directory)"
    assert skipped[1].startswith(f"{paths[5]}: not a decodable image (Unknown image file format")
    assert len(skipped) == 2
    out = tmp_path / "records.json"
    with predict.record_writer(out, model.class_names) as write:
        for record in first + rest:
            write(record)
    assert json.loads(out.read_text()) == first + rest


def write_clip(path, frames, fps):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, PHOTO_SIZE)
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def read_clip(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    return frames


@pytest.mark.slow
def test_command_line_on_photos_and_a_video(trained_workdir, face_crop, tmp_path):
    photo = face_photo(face_crop)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    # A portrait phone photo: stored sideways, shown upright by its EXIF orientation 6.
    save_with_orientation(np.rot90(photo, 1), inputs / "portrait.jpg", 6)
    noise = np.random.default_rng(0).integers(100, 140, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(noise).save(inputs / "no_face.png")
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    background = np.full_like(photo, (90, 120, 150))
    write_clip(inputs / "clip.avi", [photo] * 4 + [background] * 2, fps=10)
    out, annotated = tmp_path / "predictions.csv", tmp_path / "annotated.avi"
    done = subprocess.run(
        [sys.executable, "-m", "ldl_jax.predict", f"--workdir={trained_workdir}",
         "--detect_faces", "--every_n_frames=2", f"--out={out}",
         f"--annotated_video={annotated}", str(inputs)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip

    assert done.returncode == 1, done.stderr  # a file was skipped
    (skipped,) = [line for line in done.stderr.splitlines() if line.startswith("skipped: ")]
    assert skipped.startswith(f"skipped: {inputs / 'broken.jpg'}: not a decodable image (")
    with out.open() as file:
        rows = list(csv.DictReader(file))
    by_name = {}
    for row in rows:
        by_name.setdefault(os.path.basename(row["path"]), []).append(row)
    assert sorted(by_name) == ["clip.avi", "no_face.png", "portrait.jpg"]
    assert [row["face"] for row in by_name["no_face.png"]] == [predict.NO_FACE]
    # The face is found where it is in the upright photo.
    (portrait,) = by_name["portrait.jpg"]
    x, y, w, h = map(int, portrait["face"].split())
    centre_x, centre_y = x + w / 2 - FACE_AT[0], y + h / 2 - FACE_AT[1]
    assert 60 <= centre_x <= 140 and 60 <= centre_y <= 140 and 80 <= w <= 240
    assert (
        portrait["prediction"]
        in json.loads((trained_workdir / "config.json").read_text())["class_names"]
    )
    # Frames 0, 2 and 4 of the 10 frames/s clip; the last shows no face.
    clip = by_name["clip.avi"]
    assert [(row["frame"], row["time_s"]) for row in clip] == [
        ("0", "0.000"), ("2", "0.200"), ("4", "0.400")]  # fmt: skip
    assert [row["face"] == predict.NO_FACE for row in clip] == [False, False, True]
    assert all(row["prediction"] for row in clip[:2]) and not clip[2]["prediction"]
    probabilities = np.array([[float(row[n]) for n in list(row)[5:]] for row in clip[:2]])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)

    # Frame 1 shows frame 0's box (green on its top edge), frame 5 the plain background.
    source, drawn = read_clip(inputs / "clip.avi"), read_clip(annotated)
    assert len(drawn) == 6
    x, y, w, _ = map(int, clip[0]["face"].split())
    b, g, r = drawn[1][y, x + w // 2].astype(int)
    assert g > 150 and r < 100 and b < 100
    assert np.abs(drawn[5].astype(int) - source[5]).max() < 40
