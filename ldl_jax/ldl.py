"""The LDLVA step math (docs/METHOD.md §3) as pure functions of jnp arrays.

Each function mirrors one line of the method; the train step composes them. Nothing here
holds state or knows about models or optimisers.
"""

import jax
import jax.numpy as jnp

from ldl_jax import config_fields

LOG_EPSILON = 1e-10
# What a neighbour contributes to the neighbour distribution q: its prediction (the reference)
# or its label weighted by its lambda, with its prediction for the rest.
# The running class marginals of the prior correction move this far toward each batch's
# (a window of about 100 steps, like a BatchNorm running average).
PRIOR_MARGINAL_MOMENTUM = 0.99
# Marginals below this count as this much: a class absent from training gets no shift.
PRIOR_MARGINAL_FLOOR = 1e-6


def va_weights(va, va_neighbors, bandwidth=0.5):
    """Valence-arousal similarity a_ij = exp(-(|v_i - v_j| + |a_i - a_j|) / bandwidth).

    Args:
      va: (B, 2) valence and arousal of the central samples.
      va_neighbors: (B, K, 2) valence and arousal of their neighbours.
      bandwidth: the kernel width (0.5 in the reference).

    Returns:
      (B, K) weights in (0, 1].
    """
    distance = jnp.abs(va[:, None, :] - va_neighbors).sum(axis=-1)
    return jnp.exp(-distance / bandwidth)


def target_distribution(lam, labels, probs_neighbors, weights, num_classes):
    """y = lam * onehot(label) + (1 - lam) * q, q the weighted mean neighbour distribution.

    Args:
      lam: (B,) or (B, 1) the per-sample confidence lambda in [0, 1].
      labels: (B,) integer labels.
      probs_neighbors: (B, K, C) the neighbours' distributions: their predictions (the
        reference) or what `neighbor_distributions` makes of them.
      weights: (B, K) neighbour weights a * s (positive).
      num_classes: C.

    Returns:
      (B, C) target distributions; each row sums to 1.
    """
    lam = jnp.reshape(lam, (-1, 1))
    neighbor_mean = jnp.einsum("bk,bkc->bc", weights, probs_neighbors)
    neighbor_mean = neighbor_mean / weights.sum(axis=-1, keepdims=True)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=neighbor_mean.dtype)
    return lam * one_hot + (1.0 - lam) * neighbor_mean


def neighbor_distributions(mode, probs_neighbors, labels_neighbors, lam_neighbors):
    """What each neighbour contributes to q (`config.neighbor_distribution`, docs/METHOD.md §3):
    'prediction' (the reference) its prediction p_j; 'label' its own target, lam_j *
    onehot(l_j) + (1 - lam_j) * p_j.

    Args:
      mode: one of config_fields.NEIGHBOR_DISTRIBUTIONS.
      probs_neighbors: (B, K, C) predicted distributions of the neighbours.
      labels_neighbors: (B, K) their (possibly noisy) labels.
      lam_neighbors: (B, K) their confidences lambda.

    Returns:
      (B, K, C) distributions.
    """
    if mode not in config_fields.NEIGHBOR_DISTRIBUTIONS:
        raise ValueError(
            f"neighbor_distribution={mode!r} is not one of {config_fields.NEIGHBOR_DISTRIBUTIONS}"
        )
    if mode == "prediction":
        return probs_neighbors
    one_hot = jax.nn.one_hot(
        labels_neighbors, probs_neighbors.shape[-1], dtype=probs_neighbors.dtype
    )
    lam = lam_neighbors[..., None]
    return lam * one_hot + (1.0 - lam) * probs_neighbors


def running_marginal(running, rows, momentum=PRIOR_MARGINAL_MOMENTUM, axis_name=None):
    """`running` (C,) moved toward the class marginal of this batch's (B, C) distributions
    (averaged over the devices of `axis_name` too)."""
    batch_marginal = rows.mean(axis=0)
    if axis_name is not None:
        batch_marginal = jax.lax.pmean(batch_marginal, axis_name)
    return momentum * running + (1.0 - momentum) * batch_marginal


def prior_shift(label_marginal, target_marginal):
    """log(label marginal) - log(target marginal): the logit shift that gives back each class
    the share of the training labels that the label distributions moved to other classes
    (docs/METHOD.md §3, "The prior correction"). Zero where the targets are the labels."""
    floor = PRIOR_MARGINAL_FLOOR
    return jnp.log(jnp.maximum(label_marginal, floor)) - jnp.log(
        jnp.maximum(target_marginal, floor)
    )


# The loss between the predicted and the target distribution (`config.loss`): cross-entropy
# (the method) or the generalised cross-entropy of Zhang & Sabuncu (NeurIPS 2018), a
# noise-robust baseline (docs/METHOD.md §3).


def classification_loss(probs, target, sample_weights=None, loss="cross_entropy", gce_q=0.7):
    """Mean over the batch of w_i * l(p_i, y_i), with l the cross-entropy
    sum_c -y_ic log(p_ic + 1e-10) or, for `loss='gce'`, sum_c y_ic (1 - p_ic^q) / q (which is
    (1 - p_i,label^q) / q for a one-hot target: between cross-entropy, q -> 0, and the mean
    absolute error, q = 1)."""
    if loss == "cross_entropy":
        per_row = -(target * jnp.log(probs + LOG_EPSILON)).sum(axis=-1)
    elif loss == "gce":
        per_row = (target * (1.0 - jnp.power(probs + LOG_EPSILON, gce_q)) / gce_q).sum(axis=-1)
    else:
        raise ValueError(f"loss={loss!r} is not one of {config_fields.LOSSES}")
    if sample_weights is not None:
        per_row = per_row * sample_weights
    return per_row.mean()


def smooth_labels(target, smoothing):
    """(1 - smoothing) * target + smoothing / C: label smoothing of the (B, C) targets
    (`config.label_smoothing`; 0 leaves them as they are)."""
    return (1.0 - smoothing) * target + smoothing / target.shape[-1]


def recenter_per_class(theta, labels, class_counts, mean):
    """Shifts the logits of each class so that their mean is `mean` again.

    theta_i <- theta_i - (mean_{j: l_j = l_i} theta_j - mean_{l_i}): a projection after each
    SGD step, so that theta can move label confidence between the rows of a class but never
    take it from a whole class (docs/METHOD.md §3).

    Args:
      theta: (N,) one logit per training row.
      labels: (N,) the (possibly noisy) label of every training row.
      class_counts: (C,) rows per class (a class without rows is left alone).
      mean: the mean logit each class keeps: a scalar (lamb_init) or one per class (C,).
    """
    sums = jax.ops.segment_sum(theta, labels, num_segments=class_counts.shape[0])
    class_means = sums / jnp.maximum(class_counts, 1)
    return theta - (class_means - mean)[labels]


def neighbor_label_consensus(labels, neighbors, num_classes):
    """a_c: how much the VA neighbours of class c's rows agree with each other.

    For each row, the largest share of one label among its K neighbours, whatever the row's
    own label; averaged over the rows labelled c. A class whose rows sit among neighbours of
    several classes (an ambiguous class) scores low; a class that noise has filled with rows
    of other classes does not, because those rows' neighbourhoods agree on their true class.

    Args:
      labels: (N,) the (possibly noisy) label of every training row.
      neighbors: (N, K) the row indices of each row's K nearest VA neighbours.
      num_classes: C.

    Returns:
      (C,) means in [1/K, 1]; 0 for a class without rows.
    """
    shares = jax.nn.one_hot(labels[neighbors], num_classes).mean(axis=1).max(axis=-1)
    sums = jax.ops.segment_sum(shares, labels, num_segments=num_classes)
    counts = jax.ops.segment_sum(jnp.ones_like(shares), labels, num_segments=num_classes)
    return sums / jnp.maximum(counts, 1)


def consensus_class_means(consensus, lamb_init, max_lambda=0.99):
    """The mean theta of each class under `lamb_class_mean = 'consensus'` (docs/METHOD.md §3).

    A class whose neighbourhoods agree as much as the most agreeing class's keeps
    sigmoid(lamb_init); the less they agree, the more of the way to lambda = 1 its mean moves,
    because its rows' neighbour distributions q then mix several classes and say less about
    the rows' labels:
    lambda_c = sigmoid(lamb_init) + (1 - sigmoid(lamb_init)) * (1 - a_c / max a),
    capped at `max_lambda` so the logit stays finite.

    Args:
      consensus: (C,) `neighbor_label_consensus`.
      lamb_init: the logit of the most agreeing class.

    Returns:
      (C,) logits.
    """
    base = jax.nn.sigmoid(jnp.asarray(lamb_init, jnp.float32))
    relative = consensus / jnp.maximum(consensus.max(), 1e-6)
    lam = jnp.minimum(base + (1.0 - base) * (1.0 - relative), max_lambda)
    # Never below lamb_init, which a cap under sigmoid(lamb_init) would otherwise give.
    return jnp.maximum(jnp.log(lam) - jnp.log1p(-lam), lamb_init)


def center_loss(features, labels, lam, centers):
    """L_dcm = 0.5 * sum_n lam_n ||x_n - c_{y_n}||^2 / M over the M rows of `features`."""
    lam = jnp.reshape(lam, (-1,))
    squared_distance = jnp.square(features - centers[labels]).sum(axis=-1)
    return 0.5 * (lam * squared_distance).sum() / features.shape[0]


def _center_repulsion(centers):
    """S = sum_{i<j} exp(-||c_i - c_j||^2 / D)."""
    pairwise = jnp.square(centers[:, None, :] - centers[None, :, :]).sum(axis=-1)
    kernel = jnp.exp(-pairwise / centers.shape[-1])
    upper = jnp.triu(jnp.ones_like(kernel, dtype=bool), k=1)
    return jnp.where(upper, kernel, 0.0).sum()


def update_centers(centers, features, labels, lam, lr=0.5, push_scale=0.1, axis_name=None):
    """One pull step towards the class means, then one push step apart (docs/METHOD.md §3).

    pull: g_k = -sum_{n: y_n = k} lam_n (x_n - c_k) / ((n_k + 1) M), c_k <- c_k - lr g_k;
    push: c <- c - lr * push_scale * dS/dc with S from `_center_repulsion`.

    Args:
      centers: (C, D) class centres.
      features: (M, D) features of the rows (central and neighbour samples).
      labels: (M,) their labels.
      lam: (M,) or (M, 1) their lambdas (no gradient flows here).
      lr: the SGD learning rate of both steps.
      push_scale: the weight of the push step.
      axis_name: when the M rows are spread over devices (pmap / shard_map), the axis to sum
        the per-class statistics over so that the update is that of the global batch.

    Returns:
      (C, D) updated centres.
    """
    num_classes = centers.shape[0]
    lam = jnp.reshape(lam, (-1,)).astype(centers.dtype)
    features = features.astype(centers.dtype)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=centers.dtype)  # (M, C)
    weighted_sums = one_hot.T @ (lam[:, None] * features)  # (C, D)
    lam_sums = one_hot.T @ lam  # (C,)
    counts = one_hot.sum(axis=0)  # (C,)
    num_rows = jnp.asarray(features.shape[0], centers.dtype)
    if axis_name is not None:
        weighted_sums, lam_sums, counts, num_rows = jax.lax.psum(
            (weighted_sums, lam_sums, counts, num_rows), axis_name
        )
    pull_grad = -(weighted_sums - lam_sums[:, None] * centers) / (
        (counts + 1.0)[:, None] * num_rows
    )
    centers = centers - lr * pull_grad
    push_grad = jax.grad(_center_repulsion)(centers)
    return centers - lr * push_scale * push_grad
