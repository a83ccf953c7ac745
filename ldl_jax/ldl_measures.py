"""The six label-distribution measures of Geng's LDL survey, between crowd and predicted
distributions (pure numpy).

X. Geng, "Label Distribution Learning", IEEE TKDE 28(7), 2016, Table 2: for a true
distribution P (here the crowd's votes) and a predicted Q over C classes,

- Chebyshev (lower is better):      max_j |P_j - Q_j|
- Clark (lower):                    sqrt(sum_j (P_j - Q_j)^2 / (P_j + Q_j)^2)
- Canberra (lower):                 sum_j |P_j - Q_j| / (P_j + Q_j)
- Kullback-Leibler (lower):         sum_j P_j ln(P_j / Q_j)
- cosine (higher):                  sum_j P_j Q_j / (||P|| ||Q||)
- intersection (higher):            sum_j min(P_j, Q_j)

Crowd distributions have zeros: a Clark or Canberra term with P_j + Q_j = 0 counts 0, a
Kullback-Leibler term with P_j = 0 counts 0 (0 ln 0 = 0), and Q_j is floored at `KL_FLOOR` so
that a predicted probability that underflowed to 0 gives a large finite divergence.
"""

from __future__ import annotations

import numpy as np

KL_FLOOR = 1e-12


def _pair(truth, predicted) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(truth, np.float64)
    predicted = np.asarray(predicted, np.float64)
    if truth.shape != predicted.shape or truth.ndim != 2:
        raise ValueError(
            f"expected two (N, C) distribution arrays, got {truth.shape} and {predicted.shape}"
        )
    return truth, predicted


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def chebyshev(truth, predicted) -> np.ndarray:
    truth, predicted = _pair(truth, predicted)
    return np.abs(truth - predicted).max(axis=1)


def clark(truth, predicted) -> np.ndarray:
    truth, predicted = _pair(truth, predicted)
    return np.sqrt(_ratio((truth - predicted) ** 2, (truth + predicted) ** 2).sum(axis=1))


def canberra(truth, predicted) -> np.ndarray:
    truth, predicted = _pair(truth, predicted)
    return _ratio(np.abs(truth - predicted), truth + predicted).sum(axis=1)


def kl_divergence(truth, predicted) -> np.ndarray:
    truth, predicted = _pair(truth, predicted)
    ratio = truth / np.maximum(predicted, KL_FLOOR)
    log_ratio = np.log(ratio, out=np.zeros_like(ratio), where=truth > 0)
    return (truth * log_ratio).sum(axis=1)


def cosine(truth, predicted) -> np.ndarray:
    truth, predicted = _pair(truth, predicted)
    norms = np.linalg.norm(truth, axis=1) * np.linalg.norm(predicted, axis=1)
    return _ratio((truth * predicted).sum(axis=1), norms)


def intersection(truth, predicted) -> np.ndarray:
    truth, predicted = _pair(truth, predicted)
    return np.minimum(truth, predicted).sum(axis=1)


# Name -> per-image measure, in the survey's order (distances, then similarities).
MEASURES = {
    "chebyshev": chebyshev,
    "clark": clark,
    "canberra": canberra,
    "kl_divergence": kl_divergence,
    "cosine": cosine,
    "intersection": intersection,
}


def mean_measures(truth, predicted) -> dict[str, float]:
    """Each measure's mean over the N images of (N, C) `truth` and `predicted`."""
    return {name: float(measure(truth, predicted).mean()) for name, measure in MEASURES.items()}
