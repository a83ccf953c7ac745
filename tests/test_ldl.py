"""The step math of ldl_jax/ldl.py against docs/METHOD.md §3's closed forms and plain loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ldl_jax import ldl

B, K, C, D = 6, 4, 5, 3


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _distributions(rng, shape):
    return jax.nn.softmax(jnp.asarray(rng.normal(size=shape), jnp.float32) * 2.0)


def test_va_weights_matches_formula(rng):
    va = rng.uniform(-1, 1, (B, 2)).astype(np.float32)
    va_neighbors = rng.uniform(-1, 1, (B, K, 2)).astype(np.float32)
    weights = np.asarray(ldl.va_weights(va, va_neighbors))
    for i in range(B):
        for j in range(K):
            dv, da = np.abs(va[i] - va_neighbors[i, j])
            np.testing.assert_allclose(weights[i, j], np.exp(-(dv + da) / 0.5), rtol=1e-6)


def test_target_rows_sum_to_one_and_limits(rng):
    labels = jnp.asarray(rng.integers(0, C, B))
    probs_neighbors = _distributions(rng, (B, K, C))
    weights = jnp.asarray(rng.uniform(0.1, 1.0, (B, K)), jnp.float32)
    lam = jnp.asarray(rng.uniform(0, 1, B), jnp.float32)

    target = ldl.target_distribution(lam, labels, probs_neighbors, weights, C)
    np.testing.assert_allclose(target.sum(-1), np.ones(B), rtol=1e-6)

    one_hot = ldl.target_distribution(jnp.ones((B, 1)), labels, probs_neighbors, weights, C)
    np.testing.assert_allclose(one_hot, jax.nn.one_hot(labels, C), atol=1e-7)

    equal = ldl.target_distribution(jnp.zeros(B), labels, probs_neighbors, jnp.full((B, K), 0.3), C)
    np.testing.assert_allclose(equal, probs_neighbors.mean(axis=1), rtol=1e-5)


def test_theta_gradient_matches_closed_form(rng):
    theta = jnp.asarray(rng.normal(size=B), jnp.float32)
    labels = jnp.asarray(rng.integers(0, C, B))
    probs = _distributions(rng, (B, C))
    probs_neighbors = _distributions(rng, (B, K, C))
    weights = jnp.asarray(rng.uniform(0.1, 1.0, (B, K)), jnp.float32)
    omega = jnp.asarray(rng.uniform(0.5, 2.0, C), jnp.float32)

    def loss(theta):
        target = ldl.target_distribution(jax.nn.sigmoid(theta), labels, probs_neighbors, weights, C)
        return ldl.classification_loss(probs, target, omega[labels])

    lam = jax.nn.sigmoid(theta)
    log_p = jnp.log(probs + ldl.LOG_EPSILON)
    q = (weights[..., None] * probs_neighbors).sum(1) / weights.sum(1, keepdims=True)
    log_p_label = jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]
    closed_form = (omega[labels] / B) * lam * (1 - lam) * (-log_p_label + (q * log_p).sum(-1))
    np.testing.assert_allclose(jax.grad(loss)(theta), closed_form, rtol=1e-5, atol=1e-8)


def test_neighbor_distributions_mix_each_label_by_its_lambda(rng):
    probs_neighbors = _distributions(rng, (B, K, C))
    labels_neighbors = rng.integers(0, C, (B, K))
    lam_neighbors = rng.uniform(0, 1, (B, K)).astype(np.float32)
    mixed = np.asarray(
        ldl.neighbor_distributions("label", probs_neighbors, labels_neighbors, lam_neighbors)
    )
    for i in range(B):
        for j in range(K):
            expected = (1.0 - lam_neighbors[i, j]) * np.asarray(probs_neighbors[i, j])
            expected[labels_neighbors[i, j]] += lam_neighbors[i, j]
            np.testing.assert_allclose(mixed[i, j], expected, rtol=1e-5, atol=1e-7)


def test_classification_loss_value(rng):
    probs = _distributions(rng, (B, C))
    target = _distributions(rng, (B, C))
    sample_weights = jnp.asarray(rng.uniform(0.5, 2.0, B), jnp.float32)
    expected = np.mean(
        [
            sample_weights[i] * -np.sum(target[i] * np.log(np.asarray(probs[i]) + 1e-10))
            for i in range(B)
        ]
    )
    np.testing.assert_allclose(
        ldl.classification_loss(probs, target, sample_weights), expected, rtol=1e-5
    )


def test_generalised_cross_entropy_by_hand():
    probs = jnp.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    one_hot = jnp.eye(3)[jnp.array([0, 2])]
    expected = ((1 - 0.5**0.7) / 0.7 + (1 - 0.8**0.7) / 0.7) / 2
    got = ldl.classification_loss(probs, one_hot, loss="gce", gce_q=0.7)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # q = 1: the mean absolute error's half, 1 - p_label.
    got = ldl.classification_loss(probs, one_hot, loss="gce", gce_q=1.0)
    np.testing.assert_allclose(got, ((1 - 0.5) + (1 - 0.8)) / 2, rtol=1e-5)
    with pytest.raises(ValueError, match="loss='mae'"):
        ldl.classification_loss(probs, one_hot, loss="mae")


def test_label_smoothing_mixes_in_the_uniform_distribution():
    target = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.2, 0.8, 0.0, 0.0]])
    np.testing.assert_allclose(
        ldl.smooth_labels(target, 0.2),
        [[0.85, 0.05, 0.05, 0.05], [0.21, 0.69, 0.05, 0.05]],
        rtol=1e-6,
    )


def test_center_loss_value(rng):
    features = rng.normal(size=(B, D)).astype(np.float32)
    labels = rng.integers(0, C, B)
    lam = rng.uniform(0, 1, B).astype(np.float32)
    centers = rng.normal(size=(C, D)).astype(np.float32)
    expected = (
        sum(0.5 * lam[n] * np.sum((features[n] - centers[labels[n]]) ** 2) for n in range(B)) / B
    )
    np.testing.assert_allclose(
        ldl.center_loss(features, labels, lam[:, None], centers), expected, rtol=1e-5
    )


def _update_centers_by_loop(centers, features, labels, lam, lr=0.5, push_scale=0.1):
    centers = centers.astype(np.float64).copy()
    num_rows, dim = features.shape
    pulled = centers.copy()
    for k in range(centers.shape[0]):
        rows = labels == k
        grad = -np.sum(lam[rows, None] * (features[rows] - centers[k]), axis=0)
        grad /= (rows.sum() + 1) * num_rows
        pulled[k] = centers[k] - lr * grad
    push_grad = np.zeros_like(pulled)
    for i in range(len(pulled)):
        for j in range(len(pulled)):
            if i != j:
                diff = pulled[i] - pulled[j]
                # d/dc_i exp(-||c_i - c_j||^2 / D), each pair i<j counted once in S.
                push_grad[i] += np.exp(-np.sum(diff**2) / dim) * (-2.0 * diff / dim)
    return pulled - lr * push_scale * push_grad


def test_update_centers_matches_loop(rng):
    num_rows = B * (1 + K)
    features = rng.normal(size=(num_rows, D)).astype(np.float32)
    labels = rng.integers(0, C - 1, num_rows)  # the last class has no rows: pushed only
    lam = rng.uniform(0, 1, num_rows).astype(np.float32)
    centers = rng.normal(scale=0.5, size=(C, D)).astype(np.float32)
    updated = ldl.update_centers(centers, features, labels, lam)
    expected = _update_centers_by_loop(centers, features, labels, lam)
    np.testing.assert_allclose(updated, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(updated, centers)


def test_update_centers_across_shards_equals_global(rng):
    shards, rows_per_shard = 3, 8
    features = rng.normal(size=(shards, rows_per_shard, D)).astype(np.float32)
    labels = rng.integers(0, C, (shards, rows_per_shard))
    lam = rng.uniform(0, 1, (shards, rows_per_shard)).astype(np.float32)
    centers = rng.normal(size=(C, D)).astype(np.float32)
    per_shard = jax.vmap(
        lambda f, y, w: ldl.update_centers(centers, f, y, w, axis_name="devices"),
        axis_name="devices",
    )(features, labels, lam)
    expected = ldl.update_centers(
        centers, features.reshape(-1, D), labels.reshape(-1), lam.reshape(-1)
    )
    for shard in range(shards):
        np.testing.assert_allclose(per_shard[shard], expected, rtol=1e-5, atol=1e-6)


def test_recenter_per_class_restores_each_class_mean(rng):
    num_rows = 30
    labels = rng.integers(0, C - 1, num_rows)  # the last class has no rows
    theta = rng.normal(size=num_rows).astype(np.float32)
    counts = np.bincount(labels, minlength=C).astype(np.float32)
    recentered = np.asarray(ldl.recenter_per_class(theta, labels, counts, 0.5))
    for k in range(C - 1):
        rows = labels == k
        if rows.any():
            np.testing.assert_allclose(recentered[rows].mean(), 0.5, atol=1e-6)
            # Only a shift per class: the order and spacing of its rows are kept.
            np.testing.assert_allclose(
                recentered[rows] - theta[rows], recentered[rows][0] - theta[rows][0], atol=1e-6
            )


def test_recenter_per_class_takes_one_mean_per_class(rng):
    labels = np.repeat(np.arange(C), 4)
    theta = rng.normal(size=labels.size).astype(np.float32)
    counts = np.bincount(labels, minlength=C).astype(np.float32)
    means = np.linspace(-1.0, 2.0, C).astype(np.float32)
    recentered = np.asarray(ldl.recenter_per_class(theta, labels, counts, means))
    for k in range(C):
        np.testing.assert_allclose(recentered[labels == k].mean(), means[k], atol=1e-6)


def test_neighbor_label_consensus_is_the_top_label_share_among_neighbours():
    # Rows 0-2 are class 0, rows 3-4 class 1, row 5 class 2; four neighbours each.
    labels = np.array([0, 0, 0, 1, 1, 2])
    neighbors = np.array(
        [[1, 2, 3, 5], [0, 3, 4, 5], [3, 4, 0, 1], [4, 0, 1, 2], [3, 5, 0, 1], [0, 1, 3, 4]]
    )
    consensus = np.asarray(ldl.neighbor_label_consensus(labels, neighbors, num_classes=4))
    # Top shares: row 0 2/4 (label 0), row 1 2/4 (1), row 2 2/4, row 3 3/4 (0), row 4 2/4,
    # row 5 2/4; whatever the row's own label. Class 3 has no rows.
    np.testing.assert_allclose(consensus, [0.5, (0.75 + 0.5) / 2, 0.5, 0.0], atol=1e-6)


def test_consensus_class_means_move_disagreeing_classes_toward_lambda_one():
    lamb_init = 0.5
    base = 1.0 / (1.0 + np.exp(-lamb_init))
    consensus = np.array([0.9, 0.45, 0.0, 0.9], np.float32)
    logits = np.asarray(ldl.consensus_class_means(consensus, lamb_init))
    lam = 1.0 / (1.0 + np.exp(-logits))
    # The most agreeing classes keep lamb_init; half the agreement goes half the way to 1; no
    # agreement is capped at 0.99.
    np.testing.assert_allclose(logits[[0, 3]], lamb_init, atol=1e-5)
    np.testing.assert_allclose(lam[1], base + (1 - base) * 0.5, atol=1e-5)
    np.testing.assert_allclose(lam[2], 0.99, atol=1e-5)
    # A lamb_init above the cap (plain CE's lambda = 1) is kept for every class.
    np.testing.assert_allclose(np.asarray(ldl.consensus_class_means(consensus, 30.0)), 30.0)


def test_running_marginal_moves_one_percent_toward_the_batch_mean():
    running = np.full(3, 1 / 3, np.float32)
    rows = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], np.float32)
    got = np.asarray(ldl.running_marginal(running, rows))
    np.testing.assert_allclose(got, 0.99 * running + 0.01 * np.array([0.75, 0.25, 0.0]))


def test_prior_shift_gives_back_what_the_targets_took():
    labels = np.array([0.5, 0.3, 0.2, 0.0], np.float32)
    # The targets moved a quarter of class 2's mass to class 0; class 3 never occurs.
    targets = np.array([0.55, 0.3, 0.15, 0.0], np.float32)
    shift = np.asarray(ldl.prior_shift(labels, targets))
    np.testing.assert_allclose(shift, np.log([0.5 / 0.55, 1.0, 0.2 / 0.15, 1.0]), rtol=1e-6)
    # A model whose probabilities follow the targets' marginal, shifted, follows the labels'.
    corrected = targets[:3] * np.exp(shift[:3])
    np.testing.assert_allclose(corrected / corrected.sum(), labels[:3], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(ldl.prior_shift(labels, labels)), 0.0)
