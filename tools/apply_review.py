"""Applies the review page's decisions to a training CSV: relabels rows and drops rows.

  python tools/apply_review.py --csv train.csv --decisions review_decisions.csv \\
      --out train_reviewed.csv [--num_classes 7]

`review_decisions.csv` is what the page of `python -m ldl_jax.inspect --html` exports: the
columns `subDirectory_filePath`, `given` (the row's `expression` when it was reviewed) and
`decision`: `keep`, `drop` or `relabel:K` (K the new `expression`, 0-based). The output is the
training CSV with each relabelled row's `expression` set to K and each dropped row removed;
`keep` changes nothing. The labels from before the review are kept in `expression_original`
(a column of that name already there, from an earlier review, is left as it is). Dropping rows
moves row indices, so then `knn` is rebuilt from valence and arousal as `tools/build_knn.py`
builds it, with as many neighbours per row as the input's `knn` listed (a `knn` that did not
come from the CSV's own valence and arousal is replaced by one that does).

Every decision is checked before anything is written, and each bad one gets one line naming
the decisions file's line: a path not in the training CSV, a path decided twice, a `given`
that is not the CSV's label (the decisions were made on another version of the CSV), or a
decision that is none of the three or relabels outside [0, num_classes). The output goes
through a temporary file and may not be the input.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

import pandas as pd

# Run as a plain script the interpreter puts tools/ on sys.path, not the repository root.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ldl_jax.data import tables  # noqa: E402
from tools.build_knn import add_knn_column  # noqa: E402
from tools.release_common import write_csv  # noqa: E402

ORIGINAL_COLUMN = "expression_original"
DECISION_COLUMNS = ("subDirectory_filePath", "given", "decision")
_RELABEL = re.compile(r"relabel:(\d+)")


class ReviewError(ValueError):
    """Decisions that cannot be applied; one line per bad decision."""


@dataclasses.dataclass(frozen=True)
class Decisions:
    """Validated decisions, as training-CSV row indices."""

    relabel: dict[int, int]  # row -> new label (rows whose label changes)
    drop: list[int]
    keep: list[int]  # kept as they were (`keep`, or relabelled to the label they had)


def read_decisions(
    decisions_path: str, train: pd.DataFrame, train_path: str, num_classes: int
) -> Decisions:
    """Checks every decision against the training CSV (read as text by `tables.read_csv`).

    Raises:
      ReviewError: one line per bad decision, each naming its line of `decisions_path`.
    """
    decisions = tables.read_csv(decisions_path, DECISION_COLUMNS)
    labels = tables.parse_labels(train, train_path, num_classes)
    paths = train["subDirectory_filePath"]
    repeated = paths.duplicated(keep=False).to_numpy()
    row_of = {path: row for row, path in enumerate(paths) if not repeated[row]}
    duplicated = set(paths[repeated])
    problems, seen = [], {}
    relabel, drop, keep = {}, [], []
    for index, (path, given, decision) in enumerate(
        decisions[list(DECISION_COLUMNS)].itertuples(index=False)
    ):
        where = f"{decisions_path}, line {index + 2}"
        decision = decision.strip()
        if path in seen:
            problems.append(f"{where}: {path!r} was already decided on line {seen[path]}")
            continue
        seen[path] = index + 2
        if path in duplicated:
            problems.append(f"{where}: {path!r} is on more than one row of {train_path}")
            continue
        if path not in row_of:
            problems.append(f"{where}: {path!r} is not in {train_path}")
            continue
        row = row_of[path]
        if given.strip() != str(labels[row]):
            problems.append(
                f"{where}: given {given!r} but {train_path} labels {path!r} {labels[row]} "
                "(decisions made on another version of the CSV?)"
            )
            continue
        relabelled = _RELABEL.fullmatch(decision)
        if decision == "keep":
            keep.append(row)
        elif decision == "drop":
            drop.append(row)
        elif relabelled is None:
            problems.append(f"{where}: decision {decision!r} is not keep, drop or relabel:K")
        elif not int(relabelled.group(1)) < num_classes:
            problems.append(
                f"{where}: {decision!r} relabels outside [0, {num_classes}) "
                "(pass --num_classes if the data set has more classes)"
            )
        elif int(relabelled.group(1)) == labels[row]:
            keep.append(row)
        else:
            relabel[row] = int(relabelled.group(1))
    if problems:
        raise ReviewError("\n".join(problems))
    return Decisions(relabel=relabel, drop=drop, keep=keep)


def apply_decisions(train: pd.DataFrame, decisions: Decisions, train_path: str) -> pd.DataFrame:
    """The reviewed training table: relabelled, dropped rows removed, `knn` rebuilt if any
    were dropped, the labels before the review in `expression_original`."""
    reviewed = train.copy()
    if ORIGINAL_COLUMN not in reviewed.columns:
        reviewed[ORIGINAL_COLUMN] = train["expression"]
    for row, label in decisions.relabel.items():
        reviewed.loc[row, "expression"] = str(label)
    if not decisions.drop:
        return reviewed
    num_neighbors = train["knn"].iloc[0].count(";") + 1
    reviewed = reviewed.drop(index=decisions.drop).reset_index(drop=True)
    return add_knn_column(reviewed, num_neighbors, train_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--csv", required=True, help="The training CSV the page was built on.")
    parser.add_argument("--decisions", required=True, help="The page's review_decisions.csv.")
    parser.add_argument("--out", required=True, help="Where to write the reviewed CSV.")
    parser.add_argument("--num_classes", type=int, default=7, help="C: labels lie in [0, C).")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.resolve() in (Path(args.csv).resolve(), Path(args.decisions).resolve()):
        parser.error(f"--out {out} would overwrite an input; write the reviewed CSV elsewhere")
    try:
        train = tables.read_csv(args.csv, tables.TRAIN_COLUMNS)
        decisions = read_decisions(args.decisions, train, args.csv, args.num_classes)
        reviewed = apply_decisions(train, decisions, args.csv)
    except ValueError as error:  # DataError and ReviewError, one line per problem
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    write_csv(reviewed, out)
    rebuilt = " (knn rebuilt)" if decisions.drop else ""
    print(
        f"{len(decisions.relabel)} relabelled, {len(decisions.drop)} dropped, "
        f"{len(decisions.keep)} kept: wrote {len(reviewed)} rows to {out}{rebuilt}"
    )


if __name__ == "__main__":
    main()
