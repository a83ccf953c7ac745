"""config.model.pretrained: converted folders and workdirs load into the backbone or fail loudly."""

import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldl_jax import checkpointing, inference, models, pretrained, task_models, train
from ldl_jax.train_state import create_optimizer, create_train_state
from tests.helpers.tiny import make_data_config, make_tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def _state(config, num_rows=8):
    model = models.create_model(config)
    return create_train_state(config, model, create_optimizer(config, 1), num_rows)


def _shifted_backbone(config, shift=1.0):
    """The backbone variables of `config`'s fresh state, every array moved by `shift`."""
    state = _state(config)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return jax.tree.map(lambda x: np.asarray(x) + shift, pretrained.get_backbone(variables))


@pytest.fixture
def converted(tmp_path):
    """A converted-backbone folder for resnet_tiny (arrays = fresh init + 1) and its arrays."""
    backbone = _shifted_backbone(make_tiny_config())
    pretrained.save_backbone(tmp_path / "tiny", "resnet_tiny", backbone, source="test")
    return tmp_path / "tiny", backbone


def _config_from(path, **overrides):
    config = make_tiny_config(**overrides)
    config.model.pretrained = str(path)
    return config


def test_converted_folder_sets_the_backbone_and_nothing_else(converted):
    path, backbone = converted
    loaded = _state(_config_from(path))
    fresh = _state(make_tiny_config())
    got = {"params": loaded.params, "batch_stats": loaded.batch_stats}
    jax.tree.map(np.testing.assert_array_equal, pretrained.get_backbone(got), backbone)
    np.testing.assert_array_equal(
        loaded.params["classifier"]["head"]["kernel"], fresh.params["classifier"]["head"]["kernel"]
    )
    jax.tree.map(np.testing.assert_array_equal, loaded.params["simnet"], fresh.params["simnet"])
    # Adam starts from the loaded parameters: its moments are zeros of the same structure.
    assert jax.tree.structure(loaded.opt_state) == jax.tree.structure(fresh.opt_state)


def test_mis_shaped_array_is_named_with_both_shapes(converted, tmp_path):
    _, backbone = converted
    backbone["params"]["ResNet_0"]["conv_init"]["kernel"] = np.zeros((7, 7, 3, 4), np.float32)
    pretrained.save_backbone(tmp_path / "bad", "resnet_tiny", backbone)
    with pytest.raises(pretrained.PretrainedMismatchError) as error:
        _state(_config_from(tmp_path / "bad"))
    message = str(error.value)
    assert str(tmp_path / "bad") in message
    assert (
        "params/ResNet_0/conv_init/kernel: shape (7, 7, 3, 4) in the file, (7, 7, 3, 8) in "
        "the resnet_tiny backbone" in message
    )


def test_missing_array_is_named(converted, tmp_path):
    _, backbone = converted
    del backbone["batch_stats"]["ResNet_0"]["bn_init"]["var"]
    pretrained.save_backbone(tmp_path / "bad", "resnet_tiny", backbone)
    with pytest.raises(
        pretrained.PretrainedMismatchError,
        match=r"batch_stats/ResNet_0/bn_init/var: missing \(the resnet_tiny backbone has it "
        r"with shape \(8,\)\)",
    ):
        _state(_config_from(tmp_path / "bad"))


def test_unexpected_array_is_named(converted, tmp_path):
    _, backbone = converted
    backbone["params"]["ResNet_0"]["extra"] = {"kernel": np.zeros((2, 3), np.float32)}
    pretrained.save_backbone(tmp_path / "bad", "resnet_tiny", backbone)
    with pytest.raises(
        pretrained.PretrainedMismatchError,
        match=r"params/ResNet_0/extra/kernel: unexpected \(shape \(2, 3\)",
    ):
        _state(_config_from(tmp_path / "bad"))


def test_another_backbone_is_refused_by_name(converted):
    path, _ = converted
    with pytest.raises(
        pretrained.PretrainedMismatchError,
        match="holds a 'resnet_tiny' backbone, config.model.backbone is 'ir_tiny'",
    ):
        config = _config_from(path, input_size=16)
        config.model.backbone = "ir_tiny"
        _state(config)


def test_a_folder_that_is_neither_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="backbone.json does not exist"):
        _state(_config_from(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _state(_config_from(tmp_path / "nowhere"))


def test_converted_folder_is_never_overwritten(converted):
    path, backbone = converted
    with pytest.raises(FileExistsError, match="already holds a converted backbone"):
        pretrained.save_backbone(path, "resnet_tiny", backbone)


def test_abstract_state_reads_nothing(tmp_path):
    """Restoring a trained run (eval, predict, export) must not need its pretrained file."""
    config = _config_from(tmp_path / "moved_away")
    abstract = jax.eval_shape(
        lambda: create_train_state(
            config, models.create_model(config), create_optimizer(config, 1), 8
        )
    )
    assert abstract.params["classifier"]["head"]["kernel"].shape == (16, 7)


def test_workdir_backbone_initialises_a_model_for_another_data_set(tmp_path):
    # A "trained" run: 7 classes, 40 rows, its backbone moved away from the initialisation.
    source_config = make_tiny_config()
    state = _state(source_config, num_rows=40)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    trained = jax.tree.map(lambda x: x + 0.5, pretrained.get_backbone(variables))
    state = state.replace(**pretrained.replace_backbone(variables, trained), step=jnp.asarray(7))
    checkpoints = checkpointing.Checkpoints(tmp_path / "run")
    signature = task_models.signature(source_config, 40)
    checkpoints.save(state, {"signature": signature})
    checkpoints.wait_until_finished()
    checkpoints.close()

    # A new data set: 5 classes, 12 rows.
    config = _config_from(tmp_path / "run", num_classes=5)
    config.class_names = tuple("abcde")
    new = _state(config, num_rows=12)
    got = {"params": new.params, "batch_stats": new.batch_stats}
    jax.tree.map(np.testing.assert_array_equal, pretrained.get_backbone(got), trained)
    assert new.params["classifier"]["head"]["kernel"].shape == (16, 5)
    assert int(new.step) == 0 and new.theta.shape == (12,)


def test_multichannel_resnet50_takes_a_resnet50_trunk(tmp_path):
    """The fork's multi-channel ResNet-50 starts from ImageNet ResNet-50: its head stays fresh.

    (Checked on stand-in arrays: the real head has 273M parameters.)
    """
    trunk = {"conv_init": {"kernel": np.ones((7, 7, 3, 4), np.float32)}}
    pretrained.save_backbone(
        tmp_path / "r50", "resnet50", {"params": {"ResNet_0": trunk}, "batch_stats": {}}
    )
    fresh_head = {"fuse": {"kernel": np.full((1, 1, 4, 4), 2.0, np.float32)}}
    variables = {
        "params": {
            "classifier": {
                "backbone": {
                    "ResNet_0": {"conv_init": {"kernel": jnp.zeros((7, 7, 3, 4))}},
                    "MultiChannelHead_0": fresh_head,
                },
                "head": {"kernel": jnp.zeros((4, 7))},
            }
        },
        "batch_stats": {"classifier": {"backbone": {}}},
    }
    loaded = inference.load_pretrained_backbone(
        tmp_path / "r50", variables, "resnet50_multichannel"
    )
    backbone = loaded["params"]["classifier"]["backbone"]
    np.testing.assert_array_equal(backbone["ResNet_0"]["conv_init"]["kernel"], 1.0)
    np.testing.assert_array_equal(backbone["MultiChannelHead_0"]["fuse"]["kernel"], 2.0)
    with pytest.raises(pretrained.PretrainedMismatchError, match="'resnet50' backbone"):
        inference.load_pretrained_backbone(tmp_path / "r50", variables, "resnet18")


def test_bad_pretrained_fails_before_any_training_work(synthetic_dir, tmp_path, converted):
    _, backbone = converted
    del backbone["params"]["ResNet_0"]["bn_init"]
    pretrained.save_backbone(tmp_path / "bad", "resnet_tiny", backbone)
    config = make_data_config(synthetic_dir)
    config.model.pretrained = str(tmp_path / "bad")
    with pytest.raises(pretrained.PretrainedMismatchError, match="bn_init/scale: missing"):
        train.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_training_path_never_imports_torch(converted):
    path, _ = converted
    script = f"""
import sys
from ldl_jax import inference, main, models, pretrained, train, train_state
from tests.helpers.tiny import make_tiny_config
config = make_tiny_config()
config.model.pretrained = {str(path)!r}
model = models.create_model(config)
train_state.create_train_state(config, model, train_state.create_optimizer(config, 1), 8)
print(sorted(name for name in sys.modules if name == "torch" or name.startswith("torch.")))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1].replace("'", '"')) == []
