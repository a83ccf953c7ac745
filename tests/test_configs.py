"""The shipped configs: consistent, and holding docs/METHOD.md §4's reference values."""

import importlib

import pytest

from ldl_jax import config_checks

# docs/METHOD.md §4: (backbone, input_size, pad_size, lr, lr_decay, lr_steps, lamb_init, lamb_beta,
#           class_weights, val_interval)
REFERENCE = {
    "resnet50_raf": ("ir50", 112, 4, 1e-4, 0.1, (10, 30), 0.5, 0.0, False, 200),
    "resnet18_raf": ("resnet18", 224, 8, 1e-3, 0.1, (10, 20, 40), 0.5, 0.0, False, 200),
    "resnet18_affectnet": ("resnet18", 224, 8, 3e-4, 0.2, (5, 10, 20), 0.8, 0.9, True, 2000),
}


@pytest.mark.parametrize("name", [*REFERENCE, "synthetic", "default"])
def test_config_is_consistent(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    if name != "default":  # the base config names no data
        config_checks.validate_config(config)


@pytest.mark.parametrize("name", REFERENCE)
def test_reference_values(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    got = (
        config.model.backbone,
        config.input_size,
        config.pad_size,
        config.lr,
        config.lr_decay,
        tuple(config.lr_steps),
        config.lamb_init,
        config.lamb_beta,
        config.class_weights,
        config.val_interval,
    )
    assert got == REFERENCE[name]
    assert (config.batch_size, config.gamma, config.num_neighbors, config.lamb_lr) == (
        32,
        0.01,
        8,
        10.0,
    )
    assert (config.num_classes, config.num_epochs, config.save_interval) == (7, 60, 2)


@pytest.mark.parametrize("name", [*REFERENCE, "synthetic"])
def test_configs_run_the_reference_unless_a_variant_is_named(name):
    """`--config=configs/NAME.py` runs LDLVA as the reference does; `:ldl_jax` turns on every
    deviation (docs/EXPERIMENTS.md decides when one becomes a default)."""
    module = importlib.import_module(f"configs.{name}")
    reference, deviations = module.get_config(), module.get_config("ldl_jax")
    assert not reference.lamb_fixed_class_mean and not reference.prior_correction
    assert reference.neighbor_distribution == "prediction"
    assert deviations.lamb_fixed_class_mean and deviations.prior_correction
    assert (deviations.neighbor_distribution, deviations.lamb_class_mean) == ("label", "consensus")
    # Nothing else differs, but for the synthetic config's lambda learning rate from scratch.
    changed = {
        key for key, value in reference.to_dict().items() if deviations.to_dict()[key] != value
    }
    expected = {"lamb_fixed_class_mean", "lamb_class_mean", "neighbor_distribution"}
    expected |= {"prior_correction"} | ({"lamb_lr"} if name == "synthetic" else set())
    assert changed == expected
    with pytest.raises(ValueError, match="unknown method variant 'ldljax'"):
        module.get_config("ldljax")


def test_synthetic_data_paths_follow_its_folder():
    config = importlib.import_module("configs.synthetic").get_config()
    config.data.synthetic.dir = "elsewhere/set"  # as --config.data.synthetic.dir=... sets it
    data = config.data
    assert (data.image_dir, data.train_csv, data.val_csv, data.test_csv) == (
        "elsewhere/set/images",
        "elsewhere/set/train.csv",
        "elsewhere/set/val.csv",
        "elsewhere/set/test.csv",
    )
    config.data.test_csv = "other/test.csv"  # each path can still be set alone
    assert (data.test_csv, data.train_csv) == ("other/test.csv", "elsewhere/set/train.csv")
