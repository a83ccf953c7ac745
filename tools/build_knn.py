"""Writes a training CSV's `knn` column from its valence and arousal (docs/METHOD.md §1, §8).

  python tools/build_knn.py --csv train.csv --out train_knn.csv [--num_neighbors 20]

For every row, the `--num_neighbors` nearest other rows in VA space (L1 distance |dv| + |da|,
self excluded, nearest first, ties by row index) become its `;`-joined `knn` entry; an existing
`knn` column is replaced, every other column is kept. AffectNet ships valence and arousal per
image; data sets without them (RAF-DB) need them predicted first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a plain script the interpreter puts tools/ on sys.path, not the repository root.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ldl_jax.va_knn import format_knn_column, knn_in_va_space  # noqa: E402


def add_knn_column(frame: pd.DataFrame, num_neighbors: int, csv_name: str) -> pd.DataFrame:
    """`frame` with its `knn` column (re)computed from `valence` and `arousal`."""
    missing = [column for column in ("valence", "arousal") if column not in frame.columns]
    if missing:
        raise ValueError(f"{csv_name}: missing column(s) {missing}")
    va = frame[["valence", "arousal"]].apply(pd.to_numeric, errors="coerce").to_numpy()
    bad_rows = np.flatnonzero(~np.isfinite(va).all(axis=1))
    if bad_rows.size:
        row = int(bad_rows[0])
        raise ValueError(
            f"{csv_name}, line {row + 2} (row index {row}): valence/arousal is not a finite "
            f"number ({bad_rows.size} such row(s))"
        )
    try:
        knn = knn_in_va_space(va, num_neighbors)
    except ValueError as error:
        raise ValueError(f"{csv_name}: {error}") from error
    return frame.assign(knn=format_knn_column(knn))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="Training CSV with valence and arousal.")
    parser.add_argument("--out", required=True, help="Where to write the CSV with knn.")
    parser.add_argument("--num_neighbors", type=int, default=20, help="Neighbours per row.")
    args = parser.parse_args(argv)
    try:
        frame = add_knn_column(pd.read_csv(args.csv), args.num_neighbors, args.csv)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    out = Path(args.out)
    temporary = out.with_name(out.name + ".tmp")
    frame.to_csv(temporary, index=False)
    temporary.replace(out)
    print(f"wrote {len(frame)} rows with {args.num_neighbors} neighbours each to {out}")


if __name__ == "__main__":
    main()
