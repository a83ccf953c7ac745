"""Nearest neighbours in valence-arousal (VA) space.

LDLVA pairs every training image with the training images whose valence and
arousal are closest to its own. This module computes those neighbour lists for
any set of VA points: the L1 distance ``|dv| + |da|`` in float64, the point
itself excluded, nearest first, ties broken by the smaller row index. The
distance matrix is built a block of rows at a time, so a few hundred thousand
points never need an N x N array.
"""

from __future__ import annotations

import numpy as np

# Most distances computed at once (queries x candidates): about 128 MiB of
# float64 per array.
_BLOCK_ELEMENTS = 1 << 24
# Queries per block unless the caller says otherwise.
_DEFAULT_QUERIES_PER_BLOCK = 1024


def knn_in_va_space(
    va: np.ndarray, k: int, chunk_size: int = _DEFAULT_QUERIES_PER_BLOCK
) -> np.ndarray:
    """Returns the ``k`` nearest other rows of every row of ``va``.

    Distances are L1 in VA space, ``|v_i - v_j| + |a_i - a_j|``, computed in
    float64. Among rows at the same distance the smaller index comes first, so
    the result is fully deterministic and does not depend on ``chunk_size``.

    Rows are processed in blocks of ``chunk_size`` queries that are adjacent
    in valence. A cheap first pass bounds each query's k-th distance using
    only rows nearby in valence; the exact pass then compares the block with
    the rows whose valence lies within that bound, which is exact because an
    L1 distance is never smaller than its valence part. Memory stays near
    ``_BLOCK_ELEMENTS`` distances per step whatever N is.

    Args:
        va: Array of shape (N, 2) holding valence and arousal per row.
        k: Neighbours per row; must satisfy ``1 <= k < N``.
        chunk_size: Queries per block (a speed knob only).

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

    by_valence = np.argsort(points[:, 0], kind="stable")
    sorted_valence = points[by_valence, 0]
    neighbours = np.empty((num_points, k), dtype=np.int64)
    for start in range(0, num_points, chunk_size):
        stop = min(start + chunk_size, num_points)
        queries = by_valence[start:stop]
        radius = _kth_distance_bound(points, by_valence, start, stop, k)
        candidates = _rows_within_valence(
            sorted_valence, by_valence, start, stop, radius
        )
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
    if not np.all(np.isfinite(points)):
        bad_rows = np.flatnonzero(~np.all(np.isfinite(points), axis=1))
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


def _kth_distance_bound(
    points: np.ndarray, by_valence: np.ndarray, start: int, stop: int, k: int
) -> float:
    """Bounds from above the k-th neighbour distance of a block of queries.

    The queries are the rows at valence ranks [start, stop). Their k-th
    smallest distance to the rows ranked [start - k, stop + k) (at least k
    rows besides each query) cannot be below the true k-th distance.

    Returns:
        The largest such bound over the block.
    """
    window = by_valence[max(0, start - k) : min(len(by_valence), stop + k)]
    queries = by_valence[start:stop]
    distances = _l1_distances(points[queries], points[window])
    distances[queries[:, None] == window[None, :]] = np.inf
    return float(np.partition(distances, k - 1, axis=1)[:, k - 1].max())


def _rows_within_valence(
    sorted_valence: np.ndarray,
    by_valence: np.ndarray,
    start: int,
    stop: int,
    radius: float,
) -> np.ndarray:
    """Returns, in index order, the rows whose valence is near the block's.

    Every row within L1 distance ``radius`` of a query ranked [start, stop)
    has a valence within ``radius`` of the block's valence range. The range is
    widened by a few ulps so float rounding cannot drop such a row.
    """
    slack = 1e-12 * (1.0 + radius + abs(sorted_valence[0]) + abs(sorted_valence[-1]))
    low = sorted_valence[start] - radius - slack
    high = sorted_valence[stop - 1] + radius + slack
    first = np.searchsorted(sorted_valence, low, side="left")
    last = np.searchsorted(sorted_valence, high, side="right")
    return np.sort(by_valence[first:last])


def _exact_neighbours(
    points: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int
) -> np.ndarray:
    """Ranks the candidate rows for each query, a few queries at a time.

    Args:
        points: (N, 2) float64 VA values.
        queries: Row indices to find neighbours for.
        candidates: Ascending row indices that include every true neighbour.
        k: Neighbours per query.

    Returns:
        int64 array (len(queries), k) of row indices, nearest first.
    """
    rows_per_step = max(1, _BLOCK_ELEMENTS // len(candidates))
    result = np.empty((len(queries), k), dtype=np.int64)
    for first in range(0, len(queries), rows_per_step):
        step_queries = queries[first : first + rows_per_step]
        distances = _l1_distances(points[step_queries], points[candidates])
        distances[step_queries[:, None] == candidates[None, :]] = np.inf
        columns = _k_smallest_by_distance_then_index(distances, k)
        result[first : first + rows_per_step] = candidates[columns]
    return result


def _l1_distances(queries: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Returns the (len(queries), len(points)) matrix of L1 VA distances."""
    distances = np.abs(queries[:, 0:1] - points[:, 0])
    distances += np.abs(queries[:, 1:2] - points[:, 1])
    return distances


def _k_smallest_by_distance_then_index(distances: np.ndarray, k: int) -> np.ndarray:
    """Picks, per row, the k columns first in (distance, column) order.

    Every column strictly closer than the row's k-th smallest distance is
    taken; the remaining places go to the lowest-indexed columns that tie with
    that k-th distance. This keeps the index order at the selection boundary,
    which ``np.argpartition`` alone does not.

    Args:
        distances: (R, N) float64 matrix with at least k finite values per row.
        k: Columns to select per row.

    Returns:
        int64 array (R, k) of column indices, nearest first.
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
