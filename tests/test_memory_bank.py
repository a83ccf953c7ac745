"""The neighbour memory bank (`config.neighbors = 'memory_bank'`): the step trains towards the
bank's entries, writes its central rows, and a fresh run's first pass fills every row."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldl_jax import (
    config_fields,
    ldl,
    memory_bank,
    models,
    steps,
    task_models,
    train_state,
)
from tests.helpers.tiny import make_tiny_config
from tools import random_inputs

NUM_ROWS = 20


@pytest.fixture(scope="module")
def bank_setup():
    """The tiny config with the bank, its model, the compiled step and a state whose bank holds
    random entries."""
    config = make_tiny_config(neighbors=config_fields.MEMORY_BANK, lamb_fixed_class_mean=False)
    model = models.create_model(config)
    tx = train_state.create_optimizer(config, steps_per_epoch=5)
    state = train_state.create_train_state(config, model, tx, NUM_ROWS)
    state = state.replace(
        bank=jax.tree.map(jnp.asarray, random_inputs.random_bank(config, NUM_ROWS))
    )
    return config, model, steps.compile_train_step(model, tx, config), state


def test_step_trains_towards_the_bank_and_writes_its_central_rows(bank_setup):
    config, model, train_step, state = bank_setup
    batch = random_inputs.random_train_batch(config, NUM_ROWS, seed=3)
    del batch["neighbor_image"]  # the bank step needs none
    bank = jax.device_get(state.bank)
    index, neighbor_index, labels = batch["index"], batch["neighbor_index"], batch["label"]

    # The step's arithmetic by hand: one central pass (no neighbour pass), then AdaptiveSimNet
    # and the target on the bank's entries of the neighbours and their labels.
    (features, logits), central = model.apply(
        {"params": state.params, "batch_stats": state.batch_stats},
        models.normalize_images(batch["image"], jnp.float32),
        train=True,
        mutable=["batch_stats"],
    )
    similarity, _ = model.apply(
        {"params": state.params, "batch_stats": central["batch_stats"]},
        features,
        bank.features[neighbor_index],
        train=True,
        mutable=["batch_stats"],
        method=models.LDLVA.similarity,
    )
    lam = jax.nn.sigmoid(state.theta[index])
    probs = jax.nn.softmax(logits)
    neighbor_lam = jax.nn.sigmoid(state.theta[neighbor_index])
    assert config.neighbor_distribution == "label"  # the default: labels weighted by lambda
    neighbor_distributions = ldl.neighbor_distributions(
        "label", bank.probs[neighbor_index], batch["neighbor_label"], neighbor_lam
    )
    target = ldl.target_distribution(
        lam, labels, neighbor_distributions, batch["va_weight"] * similarity, 7
    )
    neighbor_lam = neighbor_lam.reshape(-1)
    center_loss = ldl.center_loss(
        jnp.concatenate([features, bank.features[neighbor_index].reshape(-1, 16)]),
        jnp.concatenate([labels, batch["neighbor_label"].reshape(-1)]),
        jnp.concatenate([lam, neighbor_lam]),
        state.centers,
    )

    new_state, metrics = train_step(jax.tree.map(jnp.copy, state), batch)
    np.testing.assert_allclose(
        metrics["cls_loss"], ldl.classification_loss(probs, target), rtol=1e-5
    )
    np.testing.assert_allclose(metrics["center_loss"], center_loss, rtol=1e-5)
    # BatchNorm saw the central images only.
    for got, expected in zip(
        jax.tree.leaves(new_state.batch_stats["classifier"]["backbone"]),
        jax.tree.leaves(central["batch_stats"]["classifier"]["backbone"]),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # The central rows now hold this step's pass; every other row is untouched.
    written = jax.device_get(new_state.bank)
    np.testing.assert_allclose(written.features[index], features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(written.probs[index], probs, rtol=1e-5, atol=1e-6)
    others = np.setdiff1d(np.arange(NUM_ROWS), index)
    np.testing.assert_array_equal(written.features[others], bank.features[others])
    np.testing.assert_array_equal(written.probs[others], bank.probs[others])


def test_fill_sets_every_row_to_its_uncorrected_eval_pass():
    """Every row gets the eval-mode features and the softmax of the logits the step itself
    writes: without the prior correction's shift, which the marginals here make non-zero."""
    config = make_tiny_config(neighbors=config_fields.MEMORY_BANK)
    assert config.prior_correction
    model = models.create_model(config)
    tx = train_state.create_optimizer(config, steps_per_epoch=5)
    state = train_state.create_train_state(config, model, tx, NUM_ROWS)
    skewed = {
        "label_marginal": jnp.array([0.4, 0.3, 0.1, 0.1, 0.05, 0.03, 0.02]),
        "target_marginal": jnp.full((7,), 1 / 7),
    }
    classifier = {**state.batch_stats["classifier"], "prior_correction": skewed}
    state = state.replace(batch_stats={**state.batch_stats, "classifier": classifier})
    num_rows = 10  # batches of 4: the last one is padded
    images = np.random.default_rng(0).integers(0, 256, (num_rows, 16, 16, 3), dtype=np.uint8)
    empty = state.replace(bank=memory_bank.empty(num_rows, 7, 16))
    filled = memory_bank.fill(empty, model, images, batch_size=4).bank

    # The same network, one image at a time, with the backbone and head written out.
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    features, corrected = [], []
    for image in images:
        x = models.normalize_images(image[None], jnp.float32)
        f, logits = model.apply(variables, x, train=False)
        features.append(f[0])
        corrected.append(logits[0])
    shift = ldl.prior_shift(skewed["label_marginal"], skewed["target_marginal"])
    uncorrected = np.stack(corrected) - np.asarray(shift)
    assert filled.features.shape == (num_rows, 16) and filled.probs.shape == (num_rows, 7)
    np.testing.assert_allclose(filled.features, np.stack(features), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(filled.probs, jax.nn.softmax(uncorrected), rtol=1e-5, atol=1e-6)
    assert np.abs(np.asarray(filled.probs) - jax.nn.softmax(np.stack(corrected))).max() > 1e-2


def test_only_the_bank_changes_the_state_and_its_signature():
    forward, bank = make_tiny_config(), make_tiny_config(neighbors=config_fields.MEMORY_BANK)
    model = models.create_model(forward)
    tx = train_state.create_optimizer(forward, steps_per_epoch=5)
    shapes = {
        name: jax.eval_shape(lambda c=c: train_state.create_train_state(c, model, tx, NUM_ROWS))
        for name, c in (("forward", forward), ("bank", bank))
    }
    assert type(shapes["forward"]) is train_state.TrainState
    assert shapes["bank"].bank.probs.shape == (NUM_ROWS, 7)
    assert shapes["bank"].bank.features.shape == (NUM_ROWS, 16)
    assert "neighbors" not in task_models.signature(forward, NUM_ROWS)
    assert task_models.signature(bank, NUM_ROWS)["neighbors"] == "memory_bank"
