"""Nearest neighbours in valence-arousal (VA) space.

LDLVA pairs every training image with the training images whose valence and
arousal are closest to its own. This module computes those neighbour lists for
any set of VA points: the L1 distance ``|dv| + |da|`` in float64, the point
itself excluded, nearest first, ties broken by the smaller row index.

The search is exact but never builds an N x N matrix. Queries are taken in
blocks of points that lie close together (Z-order); a cheap first pass bounds
each block's k-th neighbour distance from nearby points, and the exact pass
compares the block only with the points inside its bounding box grown by that
bound. A few hundred thousand points take seconds.
"""

from __future__ import annotations

import numpy as np

# Most distances held at once (queries x candidates): 128 MiB of float64.
_MAX_DISTANCES_PER_STEP = 1 << 24
# Grid resolution (bits per axis) of the Z-order that groups nearby points.
_MORTON_BITS = 16


def knn_in_va_space(va: np.ndarray, k: int, chunk_size: int = 256) -> np.ndarray:
    """Returns the ``k`` nearest other rows of every row of ``va``.

    Distances are L1 in VA space, ``|v_i - v_j| + |a_i - a_j|``, computed in
    float64. Among rows at the same distance the smaller index comes first, so
    the result is fully deterministic and does not depend on ``chunk_size``.

    Args:
        va: Array of shape (N, 2) holding valence and arousal per row.
        k: Neighbours per row; must satisfy ``1 <= k < N``.
        chunk_size: Queries per block; changes speed and memory, not results.

    Returns:
        int64 array of shape (N, k); row i lists neighbour row indices of i,
        nearest first, never i itself.

    Raises:
        ValueError: If ``va`` is not (N, 2), holds NaN or infinity, ``k`` is
            outside ``[1, N)``, or ``chunk_size`` is not positive.
    """
    points = _validated_points(va)
    num_points = points.shape[0]
    k = _validated_k(k, num_points)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive; got {chunk_size}.")

    spatial_order = np.argsort(_morton_codes(points), kind="stable")
    by_valence = np.argsort(points[:, 0], kind="stable")
    points_by_valence = points[by_valence]
    neighbours = np.empty((num_points, k), dtype=np.int64)
    for start in range(0, num_points, chunk_size):
        stop = min(start + chunk_size, num_points)
        queries = spatial_order[start:stop]
        nearby = spatial_order[max(0, start - k) : stop + k]
        radius = _kth_distance_bound(points, queries, nearby, k)
        candidates = _rows_in_grown_box(points, by_valence, points_by_valence, queries, radius)
        neighbours[queries] = _exact_neighbours(points, queries, candidates, k)
    return neighbours


def format_knn_column(knn: np.ndarray) -> list[str]:
    """Formats neighbour lists as the ``knn`` column of a training CSV.

    Args:
        knn: Integer array of shape (N, k) of row indices.

    Returns:
        N strings, each the row's indices joined by ``;`` (e.g. ``"4;17;2"``).
    """
    return [";".join(str(int(index)) for index in row) for row in np.asarray(knn)]


def _validated_points(va: np.ndarray) -> np.ndarray:
    """Checks the VA array and returns it as contiguous float64."""
    points = np.asarray(va, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"va must have shape (N, 2) (valence, arousal); got {points.shape}.")
    finite_rows = np.all(np.isfinite(points), axis=1)
    if not np.all(finite_rows):
        bad_rows = np.flatnonzero(~finite_rows)
        raise ValueError(
            f"va holds non-finite values in {bad_rows.size} row(s), "
            f"first at row {int(bad_rows[0])}."
        )
    return np.ascontiguousarray(points)


def _validated_k(k: int, num_points: int) -> int:
    """Checks that ``k`` neighbours other than self exist for every row."""
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"k must be an integer; got {k!r}.")
    k = int(k)
    if not 1 <= k < num_points:
        raise ValueError(
            f"k must satisfy 1 <= k < N (self is excluded); got k={k}, N={num_points}."
        )
    return k


def _morton_codes(points: np.ndarray) -> np.ndarray:
    """Returns Z-order keys, so that rows close in key are close in space."""
    low, high = points.min(axis=0), points.max(axis=0)
    extent = np.where(high > low, high - low, 1.0)
    top = (1 << _MORTON_BITS) - 1
    cells = np.round((points - low) / extent * top).astype(np.uint64)
    return _spread_bits(cells[:, 0]) | (_spread_bits(cells[:, 1]) << np.uint64(1))


def _spread_bits(values: np.ndarray) -> np.ndarray:
    """Moves bit i of each 16-bit value to bit 2i."""
    values = values.astype(np.uint64)
    for shift, mask in (
        (8, 0x00FF00FF),
        (4, 0x0F0F0F0F),
        (2, 0x33333333),
        (1, 0x55555555),
    ):
        values = (values | (values << np.uint64(shift))) & np.uint64(mask)
    return values


def _kth_distance_bound(
    points: np.ndarray, queries: np.ndarray, nearby: np.ndarray, k: int
) -> float:
    """Bounds from above the k-th neighbour distance of every query.

    ``nearby`` holds the queries and at least k other rows, so each query's
    k-th smallest distance within it cannot be below the true one.

    Returns:
        The largest such bound over the queries.
    """
    distances = _l1_distances(points[queries], points[nearby])
    distances[queries[:, None] == nearby[None, :]] = np.inf
    return float(np.partition(distances, k - 1, axis=1)[:, k - 1].max())


def _rows_in_grown_box(
    points: np.ndarray,
    by_valence: np.ndarray,
    points_by_valence: np.ndarray,
    queries: np.ndarray,
    radius: float,
) -> np.ndarray:
    """Returns, ascending, every row that may lie within ``radius`` of a query.

    A row within L1 distance ``radius`` of a query differs from it by at most
    ``radius`` on each axis, so it lies in the queries' bounding box grown by
    ``radius``. A margin of a few ulps keeps float rounding from dropping one.

    Args:
        points: (N, 2) float64 VA values.
        by_valence: Row indices sorted by valence.
        points_by_valence: ``points[by_valence]``.
        queries: Row indices of the block.
        radius: Distance bound of the block.
    """
    query_points = points[queries]
    margin = radius + 1e-12 * (1.0 + radius + np.abs(query_points).max())
    low = query_points.min(axis=0) - margin
    high = query_points.max(axis=0) + margin
    sorted_valence = points_by_valence[:, 0]
    first = np.searchsorted(sorted_valence, low[0], side="left")
    last = np.searchsorted(sorted_valence, high[0], side="right")
    strip_arousal = points_by_valence[first:last, 1]
    in_box = (strip_arousal >= low[1]) & (strip_arousal <= high[1])
    return np.sort(by_valence[first:last][in_box])


def _exact_neighbours(
    points: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
) -> np.ndarray:
    """Ranks the candidate rows for each query, a few queries at a time.

    Args:
        points: (N, 2) float64 VA values.
        queries: Row indices to find neighbours for.
        candidates: Ascending row indices that include the queries and every
            true neighbour of every query.
        k: Neighbours per query.

    Returns:
        int64 array (len(queries), k) of row indices, nearest first.
    """
    queries_per_step = max(1, _MAX_DISTANCES_PER_STEP // len(candidates))
    result = np.empty((len(queries), k), dtype=np.int64)
    for first in range(0, len(queries), queries_per_step):
        step_queries = queries[first : first + queries_per_step]
        distances = _l1_distances(points[step_queries], points[candidates])
        own_columns = np.searchsorted(candidates, step_queries)
        distances[np.arange(len(step_queries)), own_columns] = np.inf
        columns = _k_smallest_by_distance_then_index(distances, k)
        result[first : first + queries_per_step] = candidates[columns]
    return result


def _l1_distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Returns the (len(queries), len(points)) matrix of L1 VA distances."""
    distances = np.abs(queries[:, 0:1] - points[:, 0])
    distances += np.abs(queries[:, 1:2] - points[:, 1])
    return distances


def _k_smallest_by_distance_then_index(distances: np.ndarray, k: int) -> np.ndarray:
    """Picks, per row, the k columns first in (distance, column) order.

    Every column strictly closer than the row's k-th smallest distance is
    taken; the remaining places go to the lowest-numbered columns that tie
    with that k-th distance. This keeps column order at the selection
    boundary, which ``np.argpartition`` alone does not.

    Args:
        distances: (R, M) float64 matrix with at least k finite values per row.
        k: Columns to select per row.

    Returns:
        int64 array (R, k) of column numbers, nearest first.
    """
    kth_distance = np.partition(distances, k - 1, axis=1)[:, k - 1 : k]
    closer = distances < kth_distance
    tied = distances == kth_distance
    places_left = k - closer.sum(axis=1, keepdims=True)
    selected = closer | (tied & (np.cumsum(tied, axis=1) <= places_left))
    # np.nonzero walks row by row, columns ascending: k columns per row.
    columns = np.nonzero(selected)[1].reshape(-1, k)
    selected_distances = np.take_along_axis(distances, columns, axis=1)
    order = np.argsort(selected_distances, axis=1, kind="stable")
    return np.take_along_axis(columns, order, axis=1).astype(np.int64)
