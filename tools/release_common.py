"""Pieces shared by the data-release tools (prepare_rafdb, prepare_affectnet, make_occluded).

Errors that name the file and line, progress on stderr, per-class counts, parallel image
work that keeps its order, and CSVs written atomically.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

# AffectNet's order, ldl_jax's order everywhere (docs/METHOD.md §1).
CLASS_NAMES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")


class ReleaseError(ValueError):
    """Bad release content; the message starts with the file and line (`file:line: ...`)."""


def build_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help shows the tool's whole docstring."""
    first, _, rest = doc.strip().partition("\n")
    return argparse.ArgumentParser(
        description=first,
        epilog=rest.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def progress(
    items: Iterable, total: int, label: str, steps: int = 10, min_total: int = 1000
) -> Iterator:
    """Yields `items`, printing `label: done/total` to stderr at every 1/steps of the work.

    Jobs of fewer than `min_total` items are not reported.
    """
    next_mark = 1
    done = 0
    for done, item in enumerate(items, 1):
        yield item
        if total >= min_total and done * steps >= next_mark * total:
            print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)
            next_mark = done * steps // total + 1


def ordered_map(function: Callable, items: Sequence, workers: int) -> Iterator:
    """`map(function, items)` on `workers` threads (image decoding releases the GIL), in order."""
    if workers <= 1:
        yield from map(function, items)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as executor:
        yield from executor.map(function, items)


def default_workers() -> int:
    return min(8, os.cpu_count() or 1)


def count_table(splits: Mapping[str, np.ndarray], num_classes: int) -> str:
    """A text table of images per class (rows) and split (columns), with totals."""
    names = list(splits)
    counts = {name: np.bincount(labels, minlength=num_classes) for name, labels in splits.items()}
    width = max(8, *(len(name) + 2 for name in names))
    lines = ["class".ljust(14) + "".join(name.rjust(width) for name in names)]
    for k in range(num_classes):
        row = f"{k} {CLASS_NAMES[k]}".ljust(14)
        lines.append(row + "".join(str(counts[name][k]).rjust(width) for name in names))
    lines.append("total".ljust(14) + "".join(str(len(splits[n])).rjust(width) for n in names))
    return "\n".join(lines)


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Writes `frame` to `path` through a temporary file, so no half-written CSV is left."""
    temporary = path.with_name(path.name + ".tmp")
    frame.to_csv(temporary, index=False)
    temporary.replace(path)
