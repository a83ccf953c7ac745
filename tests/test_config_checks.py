"""One validation of config values: each mistake is named by its field, before anything runs."""

import pytest

from ldl_jax import config_checks
from tests.helpers.tiny import make_tiny_config


def _config(**overrides):
    config = make_tiny_config()
    config.data.train_csv = "train.csv"
    config.update_from_flattened_dict(overrides)  # "data.placement": a nested field
    return config


def test_tiny_config_passes():
    config_checks.validate_config(_config())


def test_unknown_backbone_is_named():
    config = _config()
    config.model.backbone = "resnet7"
    with pytest.raises(ValueError, match="backbone='resnet7'"):
        config_checks.validate_config(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"task": "segmentation"}, "config.task='segmentation'"),
        ({"num_classes": 3}, "config.class_names has 7 names but config.num_classes=3"),
        ({"batch_size": 0}, "config.batch_size=0 must be positive"),
        ({"eval_batch_size": -1}, "config.eval_batch_size=-1 must be positive"),
        ({"parallel": "dp"}, "config.parallel='dp'"),
        ({"neighbors": "cache"}, "config.neighbors='cache'"),
        ({"lamb_class_mean": "prior"}, "config.lamb_class_mean='prior' is not one of"),
        ({"neighbor_distribution": "vote"}, "config.neighbor_distribution='vote' is not one of"),
        ({"loss": "mae"}, "config.loss='mae' is not one of"),
        ({"gce_q": 0.0}, r"config.gce_q=0.0 must be in \(0, 1\]"),
        ({"label_smoothing": 1.0}, r"config.label_smoothing=1.0 must be in \[0, 1\)"),
        ({"sync_batch_norm": False}, "config.sync_batch_norm=True"),
        ({"task": "va", "va_loss": "l1"}, "config.va_loss='l1'"),
        ({"task": "va", "parallel": "pmap"}, "config.parallel='pmap'.*'mesh' only"),
        ({"data.placement": "gpu"}, "config.data.placement='gpu' is not one of"),
        ({"task": "va", "data.placement": "device"}, "placement='device': the VA task"),
    ],
)
def test_each_mistake_names_its_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_checks.validate_config(_config(**overrides))


def test_dtype_and_missing_train_csv_are_named():
    config = _config()
    config.model.dtype = "float16"
    with pytest.raises(ValueError, match="config.model.dtype='float16'"):
        config_checks.validate_config(config)
    config = _config()
    config.data.train_csv = ""
    with pytest.raises(ValueError, match="config.data.train_csv is empty"):
        config_checks.validate_config(config)
