"""Tests of the VA nearest-neighbour search (ldl_jax/va_knn.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ldl_jax.va_knn import format_knn_column, knn_in_va_space


def brute_force_knn(va: np.ndarray, k: int) -> np.ndarray:
    """Reference: full L1 matrix, self at infinity, stable sort (ties by index)."""
    distances = np.abs(va[:, None, 0] - va[None, :, 0]) + np.abs(va[:, None, 1] - va[None, :, 1])
    np.fill_diagonal(distances, np.inf)
    return np.argsort(distances, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("decimals", [0, 1, 2, 4, None])
def test_knn_matches_brute_force_with_ties(decimals: int | None) -> None:
    rng = np.random.default_rng(decimals or 99)
    va = rng.uniform(-1.0, 1.0, size=(300, 2))
    if decimals is not None:
        va = np.round(va, decimals)  # Coarse grids force many exact ties.
    va[10] = va[20] = va[30]  # Duplicated points.

    for k in (1, 5, 40):
        expected = brute_force_knn(va, k)
        for chunk_size in (1, 7, 64, 300):
            np.testing.assert_array_equal(knn_in_va_space(va, k, chunk_size=chunk_size), expected)


def test_knn_all_points_equal_orders_by_index() -> None:
    knn = knn_in_va_space(np.zeros((6, 2)), k=3)

    np.testing.assert_array_equal(
        knn, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]] + [[0, 1, 2]] * 2
    )
    assert knn.dtype == np.int64


def test_knn_largest_k_lists_every_other_row() -> None:
    va = np.random.default_rng(0).normal(size=(25, 2))
    knn = knn_in_va_space(va, k=24, chunk_size=4)

    for row, neighbours in enumerate(knn):
        assert sorted(neighbours) == [index for index in range(25) if index != row]


@pytest.mark.parametrize(
    ("va", "k", "message"),
    [
        (np.zeros((5, 2)), 5, "1 <= k < N"),
        (np.zeros((5, 2)), 0, "1 <= k < N"),
        (np.zeros((5, 3)), 2, "shape"),
        (np.array([[0.0, 0.0], [np.nan, 0.0], [1.0, 1.0]]), 1, "non-finite"),
        (np.array([[0.0, 0.0], [0.0, np.inf], [1.0, 1.0]]), 1, "non-finite"),
    ],
)
def test_knn_rejects_bad_input(va: np.ndarray, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        knn_in_va_space(va, k)


def test_format_knn_column() -> None:
    assert format_knn_column(np.array([[4, 17, 2], [0, 1, 3]])) == ["4;17;2", "0;1;3"]
