"""The six LDL measures against values worked out by hand."""

import numpy as np
import pytest

from ldl_jax import ldl_measures

# Row 0: P = (1/2, 1/2, 0), Q = (1/4, 1/2, 1/4); row 1: P = Q.
TRUTH = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
PREDICTED = np.array([[0.25, 0.5, 0.25], [0.2, 0.3, 0.5]])
BY_HAND = {
    "chebyshev": [0.25, 0.0],
    # (1/4)^2 / (3/4)^2 + 0 + (1/4)^2 / (1/4)^2 = 1/9 + 1
    "clark": [np.sqrt(10 / 9), 0.0],
    "canberra": [1 / 3 + 1, 0.0],  # (1/4) / (3/4) + 0 + (1/4) / (1/4)
    "kl_divergence": [0.5 * np.log(2), 0.0],  # 1/2 ln 2 + 1/2 ln 1 + 0 (0 ln 0 = 0)
    # (1/8 + 1/4) / (sqrt(1/2) sqrt(3/8)) = sqrt(3) / 2
    "cosine": [np.sqrt(3) / 2, 1.0],
    "intersection": [0.75, 1.0],
}


@pytest.mark.parametrize("name", sorted(BY_HAND))
def test_each_measure_matches_its_hand_computed_value(name):
    values = ldl_measures.MEASURES[name](TRUTH, PREDICTED)
    np.testing.assert_allclose(values, BY_HAND[name], rtol=1e-12, atol=1e-15)


def test_mean_measures_averages_over_images():
    means = ldl_measures.mean_measures(TRUTH, PREDICTED)
    assert list(means) == [
        "chebyshev",
        "clark",
        "canberra",
        "kl_divergence",
        "cosine",
        "intersection",
    ]
    for name, values in BY_HAND.items():
        assert means[name] == pytest.approx(np.mean(values), rel=1e-12)


def test_a_prediction_that_underflowed_to_zero_gives_a_finite_divergence():
    divergence = ldl_measures.kl_divergence([[0.5, 0.5]], [[1.0, 0.0]])
    assert np.isfinite(divergence).all() and divergence[0] > 10


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 2\)"):
        ldl_measures.chebyshev(TRUTH, PREDICTED[:, :2])
