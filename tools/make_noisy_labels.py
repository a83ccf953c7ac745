"""Writes a copy of a training CSV with a share of its labels flipped (noisy-label studies).

  python tools/make_noisy_labels.py --csv train.csv --ratio 0.2 [--mode proportional|uniform]
      [--seed 0] [--out train_20.csv]

Per class k, int(n_k * ratio) of its rows get another label:
- `proportional` (the reference fork's scheme): spread over the other classes in proportion
  to their frequencies;
- `uniform` (SCN, EAC): a uniformly random other class.
The clean label is kept in a column `expression_backup`; the default output name is
`{base}_{int(ratio * 100)}.csv` beside the input. Only `expression` changes: the `knn` column
stays (VA neighbours do not depend on the label), and the training step reads neighbour
labels from this noisy file, as the method does.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

MODES = ("proportional", "uniform")


def flip_labels(labels: np.ndarray, ratio: float, mode: str, seed) -> np.ndarray:
    """Noisy copy of `labels`: per class, int(n_k * ratio) rows moved to other classes.
    `seed`: an int or a sequence of ints (e.g. data seed and run seed), as numpy's
    `default_rng` takes it."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio={ratio} must lie in [0, 1)")
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {MODES}")
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError("labels hold a single class: there is nothing to flip to")
    rng = np.random.default_rng(seed)
    noisy = labels.copy()
    for k, n_k in zip(classes, counts, strict=True):
        rows = rng.choice(np.flatnonzero(labels == k), int(n_k * ratio), replace=False)
        others = classes[classes != k]
        if mode == "uniform":
            weights = np.full(len(others), 1.0 / len(others))
        else:
            weights = counts[classes != k] / counts[classes != k].sum()
        noisy[rows] = rng.choice(others, len(rows), p=weights)
    return noisy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="Clean training CSV (with `expression`).")
    parser.add_argument("--ratio", type=float, required=True, help="Share flipped per class.")
    parser.add_argument("--mode", choices=MODES, default="proportional")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        help="Output CSV (default: {base}_{percent}.csv; uniform: {base}_{percent}_uniform.csv).",
    )
    args = parser.parse_args(argv)
    source = Path(args.csv)
    try:
        frame = pd.read_csv(source)
        if "expression" not in frame.columns:
            raise ValueError(f"{source}: no `expression` column")
        noisy = flip_labels(frame["expression"].to_numpy(), args.ratio, args.mode, args.seed)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    suffix = "_uniform" if args.mode == "uniform" else ""
    default_out = source.with_name(f"{source.stem}_{round(args.ratio * 100)}{suffix}.csv")
    out = Path(args.out) if args.out else default_out
    frame = frame.assign(expression_backup=frame["expression"], expression=noisy)
    frame.to_csv(out, index=False)
    flipped = int((frame["expression"] != frame["expression_backup"]).sum())
    print(f"wrote {out}: {flipped} of {len(frame)} labels flipped ({args.mode})")


if __name__ == "__main__":
    main()
