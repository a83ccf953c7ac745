"""The compiled LDLVA train step: sparse theta, BN order, one trace, bfloat16, eval counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldl_jax import ldl, models, steps, train_state
from tests.helpers.tiny import make_tiny_config
from tools import random_inputs

NUM_ROWS = 20


def _setup(config):
    model = models.create_model(config)
    tx = train_state.create_optimizer(config, steps_per_epoch=5)
    state = train_state.create_train_state(config, model, tx, NUM_ROWS)
    return model, tx, state


TRAIN_LABELS = np.arange(NUM_ROWS) % 7
# Each row's neighbours: the next three rows, three different labels, so every class's
# neighbourhoods agree equally and every class keeps lamb_init.
TRAIN_NEIGHBORS = (np.arange(NUM_ROWS)[:, None] + np.arange(1, 4)) % NUM_ROWS


@pytest.fixture(scope="module")
def compiled():
    """The tiny config's model, optimiser, compiled step and initial state, built once.

    Theta follows the reference here (no per-class mean), so that its step is plain SGD.
    """
    config = make_tiny_config(lamb_fixed_class_mean=False)
    model, tx, state = _setup(config)
    return config, model, tx, steps.compile_train_step(model, tx, config), state


def _fresh(state):
    """A copy of `state` (the compiled step donates, i.e. deletes, its input)."""
    return jax.tree.map(jnp.copy, state)


@pytest.fixture(scope="module")
def momentum_setup():
    config = make_tiny_config(lamb_beta=0.9, lamb_fixed_class_mean=False)
    model, tx, _ = _setup(config)
    return config, model, tx, steps.compile_train_step(model, tx, config)


def test_initial_state(compiled):
    tiny_config, _, _, _, state = compiled
    np.testing.assert_allclose(jax.nn.sigmoid(state.theta), 0.6225, atol=1e-4)
    assert state.centers.shape == (tiny_config.num_classes, 16)
    assert not np.any(state.centers)


def test_learning_rate_schedule_steps_at_epoch_boundaries():
    config = make_tiny_config(lr=1.0, lr_decay=0.1, lr_steps=(2, 3))
    schedule = train_state.learning_rate_schedule(config, steps_per_epoch=10)
    np.testing.assert_allclose(
        [schedule(s) for s in (0, 19, 20, 29, 30, 100)], [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6
    )


def test_theta_rows_outside_batch_are_untouched(momentum_setup):
    config, model, tx, train_step = momentum_setup
    state = train_state.create_train_state(config, model, tx, NUM_ROWS)
    first = random_inputs.random_train_batch(config, NUM_ROWS, seed=1)
    state, _ = train_step(state, first)
    theta_before = np.asarray(state.theta)
    momentum_before = np.asarray(state.theta_momentum)
    second = random_inputs.random_train_batch(config, NUM_ROWS, seed=2)
    state, _ = train_step(state, second)
    theta_after, momentum_after = np.asarray(state.theta), np.asarray(state.theta_momentum)

    outside = np.setdiff1d(np.arange(NUM_ROWS), second["index"])
    # Rows the first batch moved carry momentum: a dense update would decay it.
    assert np.any(momentum_before[outside] != 0)
    np.testing.assert_array_equal(theta_after[outside], theta_before[outside])
    np.testing.assert_array_equal(momentum_after[outside], momentum_before[outside])
    inside = second["index"]
    assert np.all(theta_after[inside] != theta_before[inside])
    # Keras momentum: v <- beta v - lr g; theta <- theta + v.
    np.testing.assert_allclose(
        theta_after[inside] - theta_before[inside], momentum_after[inside], rtol=1e-6
    )


def test_fixed_class_mean_shifts_whole_classes_after_the_sgd_step(compiled):
    """lamb_fixed_class_mean: the SGD step of theta, then one shift per class that brings the
    class's mean logit back to lamb_init (docs/METHOD.md §3)."""
    _, model, _, _, _ = compiled
    config = make_tiny_config(lamb_fixed_class_mean=True, lamb_class_mean="lamb_init", lamb_lr=50.0)
    reference_config = make_tiny_config(lamb_fixed_class_mean=False, lamb_lr=50.0)
    tx = train_state.create_optimizer(config, steps_per_epoch=5)
    fixed_step = steps.compile_train_step(model, tx, config, train_labels=TRAIN_LABELS)
    reference_step = steps.compile_train_step(model, tx, reference_config)
    batch = random_inputs.random_train_batch(config, NUM_ROWS, seed=4)
    batch["label"] = TRAIN_LABELS[batch["index"]].astype(np.int32)
    start = train_state.create_train_state(config, model, tx, NUM_ROWS)
    sgd = np.asarray(reference_step(_fresh(start), batch)[0].theta)
    fixed = np.asarray(fixed_step(_fresh(start), batch)[0].theta)
    assert not np.allclose(sgd, config.lamb_init)
    for k in range(7):
        rows = TRAIN_LABELS == k
        np.testing.assert_allclose(fixed[rows].mean(), config.lamb_init, atol=1e-5)
        shift = fixed[rows] - sgd[rows]
        np.testing.assert_allclose(shift, shift[0], atol=1e-5)
        np.testing.assert_allclose(shift[0], config.lamb_init - sgd[rows].mean(), atol=1e-5)


def test_consensus_class_mean_holds_each_class_at_its_own_mean(compiled):
    """lamb_class_mean='consensus': after the step each class's mean theta is the logit that
    `ldl.consensus_class_means` gives for the agreement of its rows' neighbourhoods."""
    _, model, _, _, _ = compiled
    config = make_tiny_config(lamb_lr=50.0)
    assert config.lamb_class_mean == "consensus"  # the default
    tx = train_state.create_optimizer(config, steps_per_epoch=5)
    rng = np.random.default_rng(0)
    neighbors = rng.integers(0, NUM_ROWS, (NUM_ROWS, config.num_neighbors)).astype(np.int32)
    consensus = ldl.neighbor_label_consensus(TRAIN_LABELS, neighbors, config.num_classes)
    expected = np.asarray(ldl.consensus_class_means(consensus, config.lamb_init))
    assert np.ptp(expected) > 0.1  # the classes differ, so a single mean would fail
    step = steps.compile_train_step(
        model, tx, config, train_labels=TRAIN_LABELS, train_neighbors=neighbors
    )
    batch = random_inputs.random_train_batch(config, NUM_ROWS, seed=4)
    batch["label"] = TRAIN_LABELS[batch["index"]].astype(np.int32)
    theta = np.asarray(
        step(_fresh(train_state.create_train_state(config, model, tx, NUM_ROWS)), batch)[0].theta
    )
    for k in range(config.num_classes):
        np.testing.assert_allclose(theta[TRAIN_LABELS == k].mean(), expected[k], atol=1e-5)
    with pytest.raises(ValueError, match="train_neighbors"):
        steps.make_train_step(model, tx, config, train_labels=TRAIN_LABELS)


@pytest.mark.parametrize("neighbor_distribution", ["prediction", "label"])
def test_neighbor_labels_reach_theta_only_when_they_enter_q(compiled, neighbor_distribution):
    """Without the centre loss, the neighbours' labels change the theta step only with
    neighbor_distribution='label', where each neighbour brings its label weighted by its
    lambda into q; with 'prediction' (the reference) q is the neighbours' predictions alone."""
    _, model, _, _, _ = compiled
    config = make_tiny_config(
        lamb_fixed_class_mean=False, gamma=0.0, neighbor_distribution=neighbor_distribution
    )
    tx = train_state.create_optimizer(config, steps_per_epoch=5)
    step = steps.compile_train_step(model, tx, config)
    start = train_state.create_train_state(config, model, tx, NUM_ROWS)
    batch = random_inputs.random_train_batch(config, NUM_ROWS, seed=4)
    relabelled = dict(batch, neighbor_label=(batch["neighbor_label"] + 1) % config.num_classes)
    theta = np.asarray(step(_fresh(start), batch)[0].theta)
    theta_relabelled = np.asarray(step(_fresh(start), relabelled)[0].theta)
    if neighbor_distribution == "label":
        assert np.abs(theta - theta_relabelled).max() > 1e-3
    else:
        np.testing.assert_array_equal(theta, theta_relabelled)


def test_fixed_class_mean_needs_the_training_labels():
    config = make_tiny_config(lamb_fixed_class_mean=True)
    model, tx, _ = _setup(config)
    with pytest.raises(ValueError, match="train_labels"):
        steps.make_train_step(model, tx, config)


def _reference_forward(model, state, batch, num_classes):
    """The step's forward computation written out by hand: (central logits, lambda, q, target)
    with the default q (each neighbour's label with weight lambda_j, its prediction for the
    rest) and BatchNorm run on the neighbours, then the centrals, then SimNet."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    b, k = batch["neighbor_index"].shape
    neighbor_images = models.normalize_images(batch["neighbor_image"], jnp.float32)
    (nb_features, nb_logits), updated = model.apply(
        variables,
        neighbor_images.reshape((b * k,) + neighbor_images.shape[2:]),
        train=True,
        mutable=["batch_stats"],
    )
    variables["batch_stats"] = updated["batch_stats"]
    (features, logits), updated = model.apply(
        variables,
        models.normalize_images(batch["image"], jnp.float32),
        train=True,
        mutable=["batch_stats"],
    )
    variables["batch_stats"] = updated["batch_stats"]
    similarity, _ = model.apply(
        variables,
        features,
        nb_features.reshape(b, k, -1),
        train=True,
        mutable=["batch_stats"],
        method=models.LDLVA.similarity,
    )
    lam = jax.nn.sigmoid(state.theta[batch["index"]])
    weights = batch["va_weight"] * similarity
    nb_lam = jax.nn.sigmoid(state.theta[batch["neighbor_index"]])[..., None]
    nb_label = jax.nn.one_hot(batch["neighbor_label"], num_classes)
    nb_probs = jax.nn.softmax(nb_logits).reshape(b, k, -1)
    q = jnp.einsum("bk,bkc->bc", weights, nb_lam * nb_label + (1 - nb_lam) * nb_probs)
    q = q / weights.sum(-1, keepdims=True)
    one_hot = jax.nn.one_hot(batch["label"], num_classes)
    target = lam[:, None] * one_hot + (1 - lam[:, None]) * q
    return logits, lam, q, target


def test_theta_step_is_sgd_on_the_closed_form_gradient(compiled):
    """With lamb_beta = 0, theta moves by -lamb_lr * dL/dtheta (docs/METHOD.md §3's closed form)."""
    tiny_config, model, _, train_step, state = compiled
    state = _fresh(state)
    batch = random_inputs.random_train_batch(tiny_config, NUM_ROWS, seed=3)
    b = batch["index"].shape[0]
    logits, lam, q, _ = _reference_forward(model, state, batch, tiny_config.num_classes)
    log_p = jnp.log(jax.nn.softmax(logits) + ldl.LOG_EPSILON)
    log_p_label = jnp.take_along_axis(log_p, batch["label"][:, None], 1)[:, 0]
    closed_form = lam * (1 - lam) * (-log_p_label + (q * log_p).sum(-1)) / b

    theta_before = np.asarray(state.theta)[batch["index"]]
    new_state, _ = train_step(state, batch)
    np.testing.assert_allclose(
        np.asarray(new_state.theta)[batch["index"]] - theta_before,
        -tiny_config.lamb_lr * closed_form,
        rtol=1e-4,
        atol=1e-6,
    )


def test_batch_norm_statistics_update_neighbours_first(compiled):
    tiny_config, model, _, train_step, state = compiled
    state = _fresh(state)
    batch = random_inputs.random_train_batch(tiny_config, NUM_ROWS, seed=4)
    b, k = batch["neighbor_index"].shape
    images = models.normalize_images(batch["image"], jnp.float32)
    neighbor_images = models.normalize_images(batch["neighbor_image"], jnp.float32)
    neighbor_images = neighbor_images.reshape((b * k,) + images.shape[1:])

    def bn_pass(batch_stats, x):
        _, updated = model.apply(
            {"params": state.params, "batch_stats": batch_stats},
            x,
            train=True,
            mutable=["batch_stats"],
        )
        return updated["batch_stats"]

    initial = state.batch_stats
    neighbours_then_central = bn_pass(bn_pass(initial, neighbor_images), images)
    central_then_neighbours = bn_pass(bn_pass(initial, images), neighbor_images)
    only_central = bn_pass(initial, images)

    def leaves(tree):
        return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])

    def backbone(stats):  # the BatchNorm statistics (not the prior correction's marginals)
        return leaves(stats["classifier"]["backbone"])

    # Read before the step, which donates the state (unchanged variables share its arrays).
    expected = backbone(neighbours_then_central)
    other_orders = [backbone(t) for t in (central_then_neighbours, only_central)]
    initial_backbone, initial_simnet = backbone(initial), leaves(initial["simnet"])
    new_state, _ = train_step(state, batch)
    got = backbone(new_state.batch_stats)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    for other in other_orders:
        assert not np.allclose(got, other)
    assert not np.allclose(got, initial_backbone)
    # AdaptiveSimNet's statistics move too.
    assert not np.allclose(leaves(new_state.batch_stats["simnet"]), initial_simnet)


def test_train_step_traces_once(tiny_config):
    model, tx, state = _setup(tiny_config)
    traces = []
    step_fn = steps.make_train_step(
        model, tx, tiny_config, train_labels=TRAIN_LABELS, train_neighbors=TRAIN_NEIGHBORS
    )

    def counted(state, batch):
        traces.append(1)
        return step_fn(state, batch)

    compiled = jax.jit(counted, donate_argnums=0)
    losses = []
    for seed in range(4):
        state, metrics = compiled(
            state, random_inputs.random_train_batch(tiny_config, NUM_ROWS, seed=seed)
        )
        losses.append(float(metrics["loss"]))
    assert len(traces) == 1
    assert int(state.step) == 4
    assert all(np.isfinite(losses))


def test_metrics_and_centers_after_a_step(compiled):
    tiny_config, _, _, train_step, state = compiled
    batch = random_inputs.random_train_batch(tiny_config, NUM_ROWS, seed=5)
    new_state, metrics = train_step(_fresh(state), batch)
    assert set(metrics) == set(steps.TRAIN_METRICS)
    np.testing.assert_allclose(
        metrics["loss"],
        metrics["cls_loss"] + tiny_config.gamma * metrics["center_loss"],
        rtol=1e-6,
    )
    np.testing.assert_allclose(metrics["mean_lambda"], 0.6225, atol=1e-4)
    assert np.any(new_state.centers != 0)


@pytest.mark.slow
def test_bfloat16_step_agrees_with_float32():
    results = {}
    for dtype in ("float32", "bfloat16"):
        config = make_tiny_config()
        config.model.dtype = dtype
        model, tx, state = _setup(config)
        train_step = steps.compile_train_step(
            model, tx, config, train_labels=TRAIN_LABELS, train_neighbors=TRAIN_NEIGHBORS
        )
        for seed in range(2):
            state, metrics = train_step(
                state, random_inputs.random_train_batch(config, NUM_ROWS, seed=seed)
            )
        results[dtype] = (jax.device_get(metrics), np.asarray(state.theta))
        assert jax.tree.leaves(state.params)[0].dtype == jnp.float32
    (m32, theta32), (m16, theta16) = results["float32"], results["bfloat16"]
    # Stated tolerance: bfloat16 keeps 8 significant bits (relative error ~0.4% per op).
    for name in ("loss", "cls_loss", "center_loss"):
        np.testing.assert_allclose(m16[name], m32[name], rtol=3e-2, err_msg=name)
    np.testing.assert_allclose(theta16, theta32, atol=3e-2)


def test_eval_step_counts_only_masked_rows(compiled):
    config, model, _, _, state = compiled
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
        "label": np.array([0, 1, 2, 3, 0, 0], np.int32),
        "mask": np.array([1, 1, 1, 1, 0, 0], bool),
    }
    counts = steps.make_eval_step(model, config.num_classes)(state.params, state.batch_stats, batch)
    confusion = np.asarray(counts["confusion"])
    assert confusion.sum() == 4
    np.testing.assert_array_equal(confusion.sum(1)[:4], [1, 1, 1, 1])
    np.testing.assert_allclose(np.asarray(counts["prob_sum"]).sum(), 4.0, rtol=1e-5)


def test_prior_correction_tracks_the_label_and_target_marginals():
    """The step moves the marginals 1% toward the batch's labels and targets; eval-mode
    logits carry their log ratio, train-mode logits do not."""
    config = make_tiny_config()
    assert config.prior_correction  # the default
    model, tx, state = _setup(config)
    step = steps.compile_train_step(
        model, tx, config, train_labels=TRAIN_LABELS, train_neighbors=TRAIN_NEIGHBORS
    )
    batch = random_inputs.random_train_batch(config, NUM_ROWS, seed=5)
    uniform = np.full(config.num_classes, 1 / config.num_classes)
    *_, target = _reference_forward(model, state, batch, config.num_classes)
    new_state, _ = step(_fresh(state), batch)
    marginals = new_state.batch_stats["classifier"]["prior_correction"]
    one_hot = np.eye(config.num_classes)[batch["label"]]
    np.testing.assert_allclose(
        marginals["label_marginal"], 0.99 * uniform + 0.01 * one_hot.mean(0), rtol=1e-6
    )
    target_marginal = np.asarray(marginals["target_marginal"])
    np.testing.assert_allclose(
        target_marginal, 0.99 * uniform + 0.01 * np.asarray(target).mean(0), rtol=1e-5
    )
    # lambda < 1 mixes the neighbours in: the batch's targets are not its one-hot labels.
    assert not np.allclose(target_marginal, marginals["label_marginal"])

    images = models.normalize_images(batch["image"], jnp.float32)
    variables = {"params": new_state.params, "batch_stats": new_state.batch_stats}
    _, eval_logits = model.apply(variables, images, train=False)
    uncorrected = models.create_model(make_tiny_config(prior_correction=False))
    backbone_only = {
        "params": new_state.params,
        "batch_stats": {
            **new_state.batch_stats,
            "classifier": {"backbone": new_state.batch_stats["classifier"]["backbone"]},
        },
    }
    _, plain_logits = uncorrected.apply(backbone_only, images, train=False)
    shift = ldl.prior_shift(marginals["label_marginal"], target_marginal)
    np.testing.assert_allclose(eval_logits, plain_logits + shift, rtol=1e-5, atol=1e-5)


def test_prior_correction_is_zero_for_plain_cross_entropy():
    """lambda = 1: the targets are the labels, both marginals move alike, no shift."""
    config = make_tiny_config(lamb_init=30.0, lamb_lr=0.0, gamma=0.0)
    model, tx, state = _setup(config)
    step = steps.compile_train_step(
        model, tx, config, train_labels=TRAIN_LABELS, train_neighbors=TRAIN_NEIGHBORS
    )
    for seed in range(3):
        state, _ = step(state, random_inputs.random_train_batch(config, NUM_ROWS, seed=seed))
    marginals = state.batch_stats["classifier"]["prior_correction"]
    np.testing.assert_array_equal(marginals["label_marginal"], marginals["target_marginal"])


def test_without_prior_correction_the_variables_are_those_of_the_reference():
    """prior_correction=False keeps the checkpoint tree of runs made before it existed."""
    model, _, state = _setup(make_tiny_config(prior_correction=False))
    assert set(state.batch_stats["classifier"]) == {"backbone"}
    assert not model.prior_correction


@pytest.mark.parametrize(
    "overrides", [{"label_smoothing": 0.2}, {"loss": "gce", "gce_q": 0.5}], ids=["smoothing", "gce"]
)
def test_baseline_losses_are_computed_on_the_step_targets(overrides):
    """The noise studies' baselines: with lambda pinned at 1 and no centre loss, the step's
    loss is label smoothing's cross-entropy, or the generalised cross-entropy, of the labels."""
    config = make_tiny_config(
        lamb_init=30.0, lamb_lr=0.0, gamma=0.0, lamb_fixed_class_mean=False, **overrides
    )
    model, tx, state = _setup(config)
    batch = random_inputs.random_train_batch(config, NUM_ROWS, seed=6)
    logits, *_ = _reference_forward(model, state, batch, config.num_classes)
    probs = np.asarray(jax.nn.softmax(logits), np.float64)
    p_label = probs[np.arange(len(probs)), batch["label"]]
    if "label_smoothing" in overrides:
        smoothed = 0.8 * np.eye(7)[batch["label"]] + 0.2 / 7
        expected = -(smoothed * np.log(probs)).sum(-1).mean()
    else:
        expected = ((1 - p_label**0.5) / 0.5).mean()
    step = steps.compile_train_step(model, tx, config)
    _, metrics = step(_fresh(state), batch)
    np.testing.assert_allclose(metrics["cls_loss"], expected, rtol=1e-4)
