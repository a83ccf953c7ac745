"""Converts the RAF-DB basic release into ldl_jax's train.csv and test.csv.

  python tools/prepare_rafdb.py --root=RAF/basic --out=data/raf [--images=aligned|original]
      [--va_csv=raf_va.csv] [--num_neighbors=20]

Reads EmoLabel/list_patition_label.txt (lines `train_00001.jpg 5`, `test_0001.jpg 1`) and
finds each image under Image/aligned (`train_00001_aligned.jpg`, the default) or
Image/original (`train_00001.jpg`). RAF-DB's labels 1 Surprise, 2 Fear, 3 Disgust,
4 Happiness, 5 Sadness, 6 Anger, 7 Neutral become ldl_jax's (AffectNet's) 3, 4, 5, 1, 2, 6, 0.
Writes OUT/train.csv and OUT/test.csv with `subDirectory_filePath` (relative to the image
folder, which is printed: pass it as --config.data.image_dir) and `expression`, and prints
the images per split and class.

RAF-DB has no valence/arousal, so its train.csv cannot train LDLVA until they are added.
With --va_csv (columns `subDirectory_filePath` or `name`, `valence`, `arousal`; one row per
training image, matched by image name with or without `_aligned` and extension), train.csv
also gets `valence`, `arousal` and the `knn` column: the --num_neighbors nearest training
rows in VA space (exact L1, self excluded, nearest first, ties by row index).

The label file is refused, naming file:line, on a malformed line, a label outside 1..7, an
image listed twice or a listed image that is missing; nothing is written then.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

# Run as a plain script the interpreter puts tools/ on sys.path, not the repository root.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.build_knn import add_knn_column  # noqa: E402
from tools.release_common import (  # noqa: E402
    ReleaseError,
    build_parser,
    count_table,
    progress,
    write_csv,
)

# RAF-DB label (1..7) -> ldl_jax label (docs/METHOD.md §1).
RAF_TO_OURS = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
IMAGE_FOLDERS = {"aligned": Path("Image") / "aligned", "original": Path("Image") / "original"}
SPLITS = ("train", "test")
_NAME = re.compile(r"(train|test)_\d+\.jpg")
_INTEGER = re.compile(r"[+-]?\d+")
_MISSING_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class Entry:
    """One labelled image of the label file."""

    name: str  # as listed, e.g. train_00001.jpg
    split: str  # train or test
    label: int  # ldl_jax's order
    line: int  # 1-based line in the label file


def read_label_file(path: Path) -> list[Entry]:
    """Parses list_patition_label.txt; blank lines are skipped.

    Raises:
      ReleaseError: `path:line: ...` on a malformed line, a label outside 1..7 or an
        image listed twice.
    """
    try:
        text = path.read_text()
    except OSError as error:
        raise ReleaseError(f"{path}: cannot read the label file ({error})") from error
    entries = []
    first_line = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        if len(fields) != 2:
            raise ReleaseError(
                f"{where}: malformed line {line.strip()!r}: expected `<image name> <label>`"
            )
        name, label_text = fields
        if not _NAME.fullmatch(name):
            raise ReleaseError(
                f"{where}: malformed line {line.strip()!r}: the image name is not "
                "train_<number>.jpg or test_<number>.jpg"
            )
        if not _INTEGER.fullmatch(label_text):
            raise ReleaseError(
                f"{where}: malformed line {line.strip()!r}: the label is not an integer"
            )
        label = int(label_text)
        if label not in RAF_TO_OURS:
            raise ReleaseError(f"{where}: unknown label {label} for {name}; RAF-DB's are 1..7")
        if name in first_line:
            raise ReleaseError(
                f"{where}: {name} is listed twice (first at line {first_line[name]})"
            )
        first_line[name] = number
        entries.append(Entry(name, name.split("_")[0], RAF_TO_OURS[label], number))
    if not entries:
        raise ReleaseError(f"{path}: no labelled images")
    return entries


def image_file_name(name: str, images: str) -> str:
    """The file of a listed image in the chosen folder: train_00001.jpg -> ..._aligned.jpg."""
    if images == "aligned":
        return f"{Path(name).stem}_aligned.jpg"
    return name


def check_images(entries: list[Entry], label_path: Path, image_dir: Path, images: str) -> None:
    """Every listed image must exist.

    Raises:
      ReleaseError: naming the label file line of the first missing image(s).
    """
    missing = [
        entry
        for entry in progress(entries, len(entries), "checking images")
        if not (image_dir / image_file_name(entry.name, images)).is_file()
    ]
    if missing:
        shown = "; ".join(
            f"{label_path}:{entry.line}: {image_dir / image_file_name(entry.name, images)}"
            for entry in missing[:_MISSING_SHOWN]
        )
        raise ReleaseError(
            f"{label_path}:{missing[0].line}: listed image is missing "
            f"({len(missing)} of {len(entries)} listed images are missing): {shown}"
        )


def image_key(name: str) -> str:
    """The name a VA row is matched by: train_00001.jpg, train_00001_aligned.jpg -> train_00001."""
    stem = Path(str(name).strip().replace("\\", "/")).stem
    return stem.removesuffix("_aligned")


def read_va_csv(path: Path) -> dict[str, tuple[float, float]]:
    """Reads a VA source CSV into {image key: (valence, arousal)}.

    Raises:
      ReleaseError: naming the file and line of a missing column, a non-finite value or
        an image given twice.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ReleaseError(f"{path}: cannot read the VA CSV ({error})") from error
    name_column = next((c for c in ("subDirectory_filePath", "name") if c in frame), None)
    missing = [c for c in ("valence", "arousal") if c not in frame]
    if name_column is None or missing:
        raise ReleaseError(
            f"{path}:1: the header needs `subDirectory_filePath` (or `name`), `valence` and "
            f"`arousal`; found {list(frame.columns)}"
        )
    va = {}
    first_line = {}
    for row, (name, valence, arousal) in enumerate(
        zip(frame[name_column], frame["valence"], frame["arousal"], strict=True)
    ):
        line = row + 2
        values = pd.to_numeric(pd.Series([valence, arousal]), errors="coerce").to_numpy()
        if not np.isfinite(values).all():
            raise ReleaseError(
                f"{path}:{line}: valence/arousal ({valence!r}, {arousal!r}) of {name!r} is "
                "not a pair of finite numbers"
            )
        key = image_key(name)
        if key in first_line:
            raise ReleaseError(
                f"{path}:{line}: {name!r} is given twice (first at line {first_line[key]})"
            )
        first_line[key] = line
        va[key] = (float(values[0]), float(values[1]))
    return va


def attach_va(train: pd.DataFrame, va: dict, va_path: Path, num_neighbors: int) -> pd.DataFrame:
    """`train` with valence, arousal and knn columns, VA looked up by image name."""
    keys = [image_key(name) for name in train["subDirectory_filePath"]]
    absent = [
        name
        for name, key in zip(train["subDirectory_filePath"], keys, strict=True)
        if key not in va
    ]
    if absent:
        raise ReleaseError(
            f"{va_path}: no valence/arousal for {len(absent)} of {len(train)} training "
            f"images, first: {', '.join(absent[:_MISSING_SHOWN])}"
        )
    values = np.array([va[key] for key in keys], dtype=np.float64).reshape(-1, 2)
    train = train.assign(valence=values[:, 0], arousal=values[:, 1])
    return add_knn_column(train, num_neighbors, "train.csv")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--root", required=True, help="The release's basic/ folder.")
    parser.add_argument("--out", required=True, help="Folder for train.csv and test.csv.")
    parser.add_argument("--images", choices=tuple(IMAGE_FOLDERS), default="aligned")
    parser.add_argument("--va_csv", help="Valence/arousal per training image (optional).")
    parser.add_argument("--num_neighbors", type=int, default=20, help="kNN list length.")
    args = parser.parse_args(argv)
    root = Path(args.root)
    label_path = root / LABEL_FILE
    image_dir = root / IMAGE_FOLDERS[args.images]
    try:
        entries = read_label_file(label_path)
        if not image_dir.is_dir():
            raise ReleaseError(f"{image_dir}: no such image folder")
        check_images(entries, label_path, image_dir, args.images)
        frames = {
            split: pd.DataFrame(
                {
                    "subDirectory_filePath": [
                        image_file_name(e.name, args.images) for e in entries if e.split == split
                    ],
                    "expression": [e.label for e in entries if e.split == split],
                }
            )
            for split in SPLITS
        }
        for split, frame in frames.items():
            if frame.empty:
                raise ReleaseError(f"{label_path}: lists no {split} images")
        if args.va_csv:
            va_path = Path(args.va_csv)
            frames["train"] = attach_va(
                frames["train"], read_va_csv(va_path), va_path, args.num_neighbors
            )
    except ValueError as error:
        parser.error(str(error))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        write_csv(frame, out / f"{split}.csv")
    print(count_table({s: f["expression"].to_numpy() for s, f in frames.items()}, 7))
    print(f"wrote {out / 'train.csv'} and {out / 'test.csv'}")
    print(f"image_dir: {image_dir.resolve()}  (--config.data.image_dir)")
    if not args.va_csv:
        print(
            "train.csv has no valence/arousal/knn yet: LDLVA needs them (see the README, "
            "'Reproducing the paper on RAF-DB'); rerun with --va_csv once you have them."
        )


if __name__ == "__main__":
    main()
