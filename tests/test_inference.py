"""Evaluation reports, prediction on image files (with and without face detection), export."""

import json

import numpy as np
import pytest
from PIL import Image

from ldl_jax import evaluation, export, inference, predict, steps, synthetic, train
from ldl_jax.data import batches as batch_lib
from tests.conftest import make_data_config


class FixedLogitsModel:
    """Stands in for the network: the logits of image i are row i of a table, where i is
    written into the image's first pixel."""

    dtype = np.float32

    def __init__(self, logits):
        self.logits = np.asarray(logits, np.float32)

    def apply(self, variables, images, train):
        del variables, train
        ids = np.rint(np.asarray(images)[:, 0, 0, 0] * 127.5 + 127.5).astype(int)
        return None, self.logits[ids]


def test_eval_metrics_of_fixed_logits_are_exact():
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0, 2])  # 5 of 7 right
    logits = np.full((7, 4), -5.0)
    logits[np.arange(7), predicted] = 5.0
    images = np.zeros((7, 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(7)
    eval_step = steps.make_eval_step(FixedLogitsModel(logits), num_classes=4)
    batches = batch_lib.eval_batches(images, labels, batch_size=3)  # 3 + 3 + 1 padded
    metrics = evaluation.evaluate(eval_step, None, None, batches)

    assert metrics["num_examples"] == 7
    assert metrics["accuracy"] == pytest.approx(5 / 7)
    assert metrics["per_class_accuracy"] == pytest.approx([2 / 3, 1.0, 0.5, None], nan_ok=True)
    assert metrics["per_class_accuracy"][3] is None  # class 3 has no test image
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1.0 + 0.5) / 3)
    assert metrics["confusion_matrix"] == [
        [2, 1, 0, 0],
        [0, 2, 0, 0],
        [1, 0, 1, 0],
        [0, 0, 0, 0],
    ]
    softmax_peak = np.exp(5) / (np.exp(5) + 3 * np.exp(-5))
    expected_mean = np.bincount(predicted, minlength=4) / 7 * softmax_peak
    expected_mean += (1 - np.bincount(predicted, minlength=4) / 7) * (1 - softmax_peak) / 3
    np.testing.assert_allclose(metrics["mean_distribution"], expected_mean, rtol=1e-5)


@pytest.fixture(scope="module")
def trained_workdir(synthetic_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("trained")
    train.train_and_evaluate(make_data_config(synthetic_dir), workdir)
    return workdir


def test_eval_mode_reports_every_named_set(synthetic_dir, trained_workdir):
    config = make_data_config(synthetic_dir)
    config.eval_sets = {
        "occluded": {"csv": str(synthetic_dir / "val.csv"), "image_dir": config.data.image_dir}
    }
    results = train.evaluate_checkpoint(config, trained_workdir, "latest")
    assert set(results) == {"val", "test", "occluded"}
    # The same images under another name give the same numbers.
    assert results["occluded"]["confusion_matrix"] == results["val"]["confusion_matrix"]
    out = trained_workdir / "eval" / "latest-2"
    saved = json.loads((out / train.EVAL_RESULTS_FILE).read_text())
    assert saved["occluded"]["num_examples"] == results["occluded"]["num_examples"]
    for name in results:
        png = (out / f"confusion_{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG")
        assert len(png) > 5000  # a drawn matrix with labels, not an empty canvas


@pytest.fixture(scope="module")
def face_images(tmp_path_factory):
    """A synthetic face pasted large onto a plain background, and an image with no face."""
    folder = tmp_path_factory.mktemp("photos")
    faces = tmp_path_factory.mktemp("faces") / "set"
    synthetic.make_synthetic_fer(faces, num_train=21, num_test=1, image_size=96, num_neighbors=20)
    face = Image.open(faces / "images" / "test" / "00000.jpg").resize((200, 200))
    photo = Image.new("RGB", (360, 280), (90, 120, 150))
    photo.paste(face, (100, 40))
    photo.save(folder / "with_face.jpg")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(100, 140, (200, 300, 3), dtype=np.uint8)).save(
        folder / "no_face.png"
    )
    return folder


def test_predict_without_detection_gives_one_distribution_per_image(trained_workdir, face_images):
    model = inference.load(trained_workdir, "best")
    assert model.step == 2
    paths = predict.list_images([str(face_images)])
    assert [p.name for p in paths] == ["no_face.png", "with_face.jpg"]
    records = predict.predict_files(model, paths, batch_size=4)
    assert len(records) == 2
    for record in records:
        probabilities = np.array(list(record["probabilities"].values()))
        np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
        assert record["prediction"] == model.class_names[int(probabilities.argmax())]


def test_predict_detects_faces_and_reports_images_without(trained_workdir, face_images, tmp_path):
    model = inference.load(trained_workdir)
    records = predict.predict_files(model, predict.list_images([str(face_images)]), detect=True)
    by_name = {}
    for record in records:
        by_name.setdefault(record["path"].rsplit("/", 1)[-1], []).append(record)
    assert by_name["no_face.png"] == [
        {
            "path": str(face_images / "no_face.png"),
            "face": predict.NO_FACE,
            "prediction": None,
            "probabilities": None,
        }
    ]
    (face,) = by_name["with_face.jpg"]
    x, y, w, h = face["face"]
    # The box's centre lies in the middle of the 200x200 face image pasted at (100, 40).
    assert 60 <= x + w / 2 - 100 <= 140 and 60 <= y + h / 2 - 40 <= 140 and 80 <= w <= 240
    assert face["prediction"] in model.class_names

    out = tmp_path / "predictions.csv"
    predict.write_records(records, out, model.class_names)
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == ["path", "face", "prediction", *model.class_names]
    assert len(lines) == 1 + len(records)
    assert any(predict.NO_FACE in line for line in lines)


def test_exported_saved_model_matches_jax(trained_workdir, tmp_path):
    import tensorflow as tf

    model = inference.load(trained_workdir)
    paths = export.export_saved_model(model, tmp_path / "exported")
    served = tf.saved_model.load(paths["saved_model"]).signatures["serving_default"]
    rng = np.random.default_rng(0)
    for batch_size in (3, 8):  # one SavedModel serves any batch size
        images = rng.integers(0, 256, (batch_size, 16, 16, 3), dtype=np.uint8)
        got = served(images=tf.constant(images))["probabilities"].numpy()
        np.testing.assert_allclose(got, model.probabilities(images), atol=1e-4)
    names = json.loads((tmp_path / "exported" / "class_names.json").read_text())
    assert names == model.class_names
    with pytest.raises(FileExistsError):
        export.export_saved_model(model, tmp_path / "exported")
