"""Writes the built-in synthetic facial-expression dataset.

Example:
    python tools/make_synthetic_fer.py --out data/synthetic_fer --seed 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# Run as a plain script the interpreter puts tools/ on sys.path, not the
# repository root, so ldl_jax would not be importable without an install.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ldl_jax.synthetic import CLASS_BALANCES, make_synthetic_fer  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """Returns the command-line parser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="New (or empty) output folder.")
    parser.add_argument("--seed", type=int, default=0, help="Random seed.")
    parser.add_argument("--num_train", type=int, default=2000, help="Training images.")
    parser.add_argument("--num_test", type=int, default=500, help="Test images.")
    parser.add_argument(
        "--num_val", type=int, default=0, help="Validation images (0: no val split)."
    )
    parser.add_argument("--image_size", type=int, default=64, help="Image side in pixels.")
    parser.add_argument(
        "--num_neighbors",
        type=int,
        default=20,
        help="VA neighbours stored per training row in the knn column.",
    )
    parser.add_argument(
        "--class_balance",
        choices=sorted(CLASS_BALANCES),
        default="default",
        help="Share of each class: mildly imbalanced (default) or RAF-DB's (rafdb).",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Generates the dataset and prints its summary as JSON."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = make_synthetic_fer(
            args.out,
            seed=args.seed,
            num_train=args.num_train,
            num_test=args.num_test,
            num_val=args.num_val,
            image_size=args.image_size,
            num_neighbors=args.num_neighbors,
            class_balance=args.class_balance,
        )
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
