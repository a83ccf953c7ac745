"""Export: the SavedModel and the ONNX model give the JAX model's probabilities at any batch
size."""

import json

import numpy as np
import pytest

from ldl_jax import export, inference


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


def test_exported_onnx_model_matches_jax_at_two_batch_sizes(trained_workdir, tmp_path):
    import onnxruntime

    model = inference.load(trained_workdir)
    paths = export.export_onnx(model, tmp_path / "onnx")
    session = onnxruntime.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    (images_in,) = session.get_inputs()
    assert (images_in.name, images_in.type) == ("images", "tensor(uint8)")
    assert images_in.shape[1:] == [16, 16, 3] and isinstance(images_in.shape[0], str)
    rng = np.random.default_rng(1)
    for batch_size in (3, 8):
        images = rng.integers(0, 256, (batch_size, 16, 16, 3), dtype=np.uint8)
        (got,) = session.run(["probabilities"], {"images": images})
        assert got.shape == (batch_size, len(model.class_names))
        assert np.abs(got - model.probabilities(images)).max() < 1e-5
    names = json.loads((tmp_path / "onnx" / "class_names.json").read_text())
    assert names == model.class_names
    with pytest.raises(FileExistsError):
        export.export_onnx(model, tmp_path / "onnx")
