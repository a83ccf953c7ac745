"""Converts the RAF-DB basic release into ldl_jax's train.csv and test.csv.

  python tools/prepare_rafdb.py --root=RAF/basic --out=data/raf [--images=aligned|original]
      [--size=100] [--margin=0.2] [--va_csv=raf_va.csv] [--num_neighbors=20]

Reads EmoLabel/list_patition_label.txt (lines `train_00001.jpg 5`, `test_0001.jpg 1`) and
finds each image under Image/aligned (`train_00001_aligned.jpg`, the default) or
Image/original (`train_00001.jpg`). RAF-DB's labels 1 Surprise, 2 Fear, 3 Disgust,
4 Happiness, 5 Sadness, 6 Anger, 7 Neutral become ldl_jax's (AffectNet's) 3, 4, 5, 1, 2, 6, 0.
Writes OUT/train.csv and OUT/test.csv with `subDirectory_filePath` (relative to the image
folder, which is printed: pass it as --config.data.image_dir) and `expression`, and prints
the images per split and class.

--images=original aligns each face the way RAF-DB's aligned set was made, from the release's
annotations, into OUT/images/<name>.png (--size pixels square, 100 like the aligned set):
- Annotation/manual/<name>_manu_attri.txt: the 5 manual landmarks, one `x<TAB>y` line each
  (left eye, right eye, nose tip, left mouth corner, right mouth corner, as seen in the
  image), then three lines of gender, race and age, which are not used. The landmarks are
  moved onto ldl_jax.face_align's template by a similarity transform (`align_face`).
- Annotation/boundingbox/<name>_boundingbox.txt: one line `x_min y_min x_max y_max`. Where an
  image has no manual landmarks its box is cut out square, widened by --margin of its longer
  side on each side (`crop_box`).
- Annotation/auto/<name>_auto_attri.txt (37 automatic landmarks) is not read: the 5 manual
  points are what the aligned set was made from.
These names and formats are those public RAF-DB loaders read (checked against several); an
image with neither file, or a file that does not parse, is refused naming it.

EmoLabel/distribution_basic.txt, where present, gives each image's crowd label distribution:
lines `train_00001.jpg 0.0294 0.0 ... 0.8824` with 7 shares of about 40 annotators' votes, in
RAF-DB's label order (1 Surprise .. 7 Neutral; the most voted class is the label, which the
tool counts and prints). Both CSVs then get a `distribution` column: the 7 shares in ldl_jax's
class order, rescaled to sum to 1, ';'-joined. Evaluation reports the LDL measures against it.

RAF-DB has no valence/arousal, so its train.csv cannot train LDLVA until they are added.
With --va_csv (columns `subDirectory_filePath` or `name`, `valence`, `arousal`; one row per
training image, matched by image name with or without `_aligned` and extension), train.csv
also gets `valence`, `arousal` and the `knn` column: the --num_neighbors nearest training
rows in VA space (exact L1, self excluded, nearest first, ties by row index). The reference
repository's published RAF-DB training CSV (subDirectory_filePath, expression, valence,
arousal, knn) is such a file; its own knn column is not used.

The label file is refused, naming file:line, on a malformed line, a label outside 1..7, an
image listed twice or a listed image that is missing; nothing is written then.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

# Run as a plain script the interpreter puts tools/ on sys.path, not the repository root.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from ldl_jax import face_align  # noqa: E402
from tools.build_knn import add_knn_column  # noqa: E402
from tools.release_common import (  # noqa: E402
    ReleaseError,
    build_parser,
    count_table,
    default_workers,
    ordered_map,
    progress,
    write_csv,
)

# RAF-DB label (1..7) -> ldl_jax label (docs/METHOD.md §1).
RAF_TO_OURS = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}
LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
DISTRIBUTION_FILE = Path("EmoLabel") / "distribution_basic.txt"
IMAGE_FOLDERS = {"aligned": Path("Image") / "aligned", "original": Path("Image") / "original"}
SPLITS = ("train", "test")
MANUAL_LANDMARKS = Path("Annotation") / "manual"  # <name>_manu_attri.txt
BOUNDING_BOXES = Path("Annotation") / "boundingbox"  # <name>_boundingbox.txt
ALIGNED_BY_LANDMARKS = "aligned on the 5 manual landmarks"
CROPPED_BY_BOX = "cropped by the bounding box (no manual landmarks)"
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


def read_distributions(path: Path) -> dict[str, np.ndarray] | None:
    """Parses distribution_basic.txt into {image name: (7,) shares in ldl_jax's order, summing
    to 1}; None if there is no such file.

    Raises:
      ReleaseError: `path:line: ...` on a malformed line or an image listed twice.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ReleaseError(f"{path}: cannot read ({error})") from error
    ours = [RAF_TO_OURS[label] for label in sorted(RAF_TO_OURS)]  # RAF-DB column -> our class
    distributions, first_line = {}, {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{number}"
        try:
            shares = np.array([float(field) for field in fields[1:]])
        except ValueError:
            shares = np.array([])
        if (
            not _NAME.fullmatch(fields[0])
            or len(shares) != len(ours)
            or not np.isfinite(shares).all()
            or (shares < 0).any()
            or shares.sum() <= 0
        ):
            raise ReleaseError(
                f"{where}: malformed line {line.strip()!r}: expected `<image name>` and "
                f"{len(ours)} non-negative shares that do not all vanish"
            )
        if fields[0] in first_line:
            raise ReleaseError(
                f"{where}: {fields[0]} is listed twice (first at line {first_line[fields[0]]})"
            )
        first_line[fields[0]] = number
        distribution = np.zeros(len(ours))
        distribution[ours] = shares / shares.sum()
        distributions[fields[0]] = distribution
    return distributions


def add_distributions(
    frames: dict[str, pd.DataFrame], entries: list[Entry], distributions: dict, path: Path
) -> int:
    """Adds the `distribution` column to each split's frame (rows in `entries` order); returns
    on how many images the most voted class is the label.

    Raises:
      ReleaseError: a listed image has no distribution.
    """
    absent = [entry.name for entry in entries if entry.name not in distributions]
    if absent:
        raise ReleaseError(
            f"{path}: no distribution for {len(absent)} of {len(entries)} listed images, "
            f"first: {', '.join(absent[:_MISSING_SHOWN])}"
        )
    for split, frame in frames.items():
        names = [entry.name for entry in entries if entry.split == split]
        frame["distribution"] = [
            ";".join(f"{share:.6f}" for share in distributions[name]) for name in names
        ]
    return sum(int(np.argmax(distributions[entry.name])) == entry.label for entry in entries)


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


def read_numbers(path: Path, lines: int, per_line: int) -> np.ndarray | None:
    """The first `lines` lines of `path` as (lines, per_line) floats; None if there is no file.

    Raises:
      ReleaseError: `path:line: ...` on a short file or a line that is not `per_line` numbers.
    """
    try:
        text = path.read_text().splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ReleaseError(f"{path}: cannot read ({error})") from None
    if len(text) < lines:
        raise ReleaseError(f"{path}: {len(text)} lines, expected at least {lines}")
    rows = []
    for number, line in enumerate(text[:lines], 1):
        fields = line.split()
        try:
            values = [float(field) for field in fields]
        except ValueError:
            values = []
        if len(values) != per_line or not np.isfinite(values).all():
            raise ReleaseError(f"{path}:{number}: {line.strip()!r} is not {per_line} numbers")
        rows.append(values)
    return np.array(rows)


def align_original(root: Path, name: str, size: int, margin: float, target: Path) -> str:
    """Writes the aligned face of one original image to `target`; returns how it was framed.

    Raises:
      ReleaseError: the image does not decode, or it has neither landmarks nor a box.
    """
    stem = Path(name).stem
    source = root / IMAGE_FOLDERS["original"] / name
    try:
        with Image.open(source) as image:
            pixels = np.asarray(image.convert("RGB"))
    except OSError as error:
        raise ReleaseError(f"{source}: cannot decode the image ({error})") from None
    landmarks = read_numbers(root / MANUAL_LANDMARKS / f"{stem}_manu_attri.txt", 5, 2)
    if landmarks is not None:
        face, how = face_align.align_face(pixels, landmarks, size), ALIGNED_BY_LANDMARKS
    else:
        box_path = root / BOUNDING_BOXES / f"{stem}_boundingbox.txt"
        corners = read_numbers(box_path, 1, 4)
        if corners is None:
            raise ReleaseError(
                f"{source}: neither {MANUAL_LANDMARKS / f'{stem}_manu_attri.txt'} nor "
                f"{BOUNDING_BOXES / f'{stem}_boundingbox.txt'} exists under {root}"
            )
        x_min, y_min, x_max, y_max = corners[0]
        if x_max <= x_min or y_max <= y_min:
            raise ReleaseError(f"{box_path}:1: box {corners[0].tolist()} has no area")
        box = (x_min, y_min, x_max - x_min, y_max - y_min)
        face, how = face_align.crop_box(pixels, box, size, margin), CROPPED_BY_BOX
    Image.fromarray(face).save(target)
    return how


def align_originals(
    entries: list[Entry], root: Path, out_dir: Path, size: int, margin: float, workers: int
) -> dict[str, int]:
    """Aligns every listed original image into out_dir/<name>.png; returns the count per way
    it was framed."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def align(entry: Entry) -> str:
        target = out_dir / aligned_file_name(entry.name)
        return align_original(root, entry.name, size, margin, target)

    framed = progress(ordered_map(align, entries, workers), len(entries), "aligning faces")
    hows = list(framed)
    return {how: hows.count(how) for how in (ALIGNED_BY_LANDMARKS, CROPPED_BY_BOX)}


def aligned_file_name(name: str) -> str:
    """The file --images=original writes for a listed image: train_00001.jpg -> .png."""
    return f"{Path(name).stem}.png"


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--root", required=True, help="The release's basic/ folder.")
    parser.add_argument("--out", required=True, help="Folder for train.csv and test.csv.")
    parser.add_argument(
        "--images",
        choices=tuple(IMAGE_FOLDERS),
        default="aligned",
        help="The release's aligned faces, or the original photos aligned here.",
    )
    parser.add_argument("--size", type=int, default=100, help="Side of the faces aligned here.")
    parser.add_argument(
        "--margin", type=float, default=0.2, help="Box crops: margin per side (of the side)."
    )
    parser.add_argument("--workers", type=int, default=default_workers(), help="Align threads.")
    parser.add_argument("--va_csv", help="Valence/arousal per training image (optional).")
    parser.add_argument("--num_neighbors", type=int, default=20, help="kNN list length.")
    args = parser.parse_args(argv)
    root = Path(args.root)
    label_path = root / LABEL_FILE
    image_dir = root / IMAGE_FOLDERS[args.images]
    out = Path(args.out)
    try:
        entries = read_label_file(label_path)
        if not image_dir.is_dir():
            raise ReleaseError(f"{image_dir}: no such image folder")
        check_images(entries, label_path, image_dir, args.images)
        file_name = functools.partial(image_file_name, images=args.images)
        if args.images == "original":
            file_name = aligned_file_name
        frames = {
            split: pd.DataFrame(
                {
                    "subDirectory_filePath": [
                        file_name(e.name) for e in entries if e.split == split
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
        distributions = read_distributions(root / DISTRIBUTION_FILE)
        agreeing = None
        if distributions is not None:
            agreeing = add_distributions(frames, entries, distributions, root / DISTRIBUTION_FILE)
        framed = {}
        if args.images == "original":
            image_dir = out / "images"
            framed = align_originals(entries, root, image_dir, args.size, args.margin, args.workers)
    except ValueError as error:
        parser.error(str(error))
    out.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        write_csv(frame, out / f"{split}.csv")
    print(count_table({s: f["expression"].to_numpy() for s, f in frames.items()}, 7))
    for how, count in framed.items():
        print(f"{how}: {count}")
    if agreeing is None:
        print(f"no {DISTRIBUTION_FILE}: the CSVs have no distribution column")
    else:
        print(
            f"distribution column from {DISTRIBUTION_FILE}: its most voted class is the label "
            f"on {agreeing} of {len(entries)} images"
        )
    print(f"wrote {out / 'train.csv'} and {out / 'test.csv'}")
    print(f"image_dir: {image_dir.resolve()}  (--config.data.image_dir)")
    if not args.va_csv:
        print(
            "train.csv has no valence/arousal/knn yet: LDLVA needs them (see the README, "
            "'Reproducing the paper on RAF-DB'); rerun with --va_csv once you have them."
        )


if __name__ == "__main__":
    main()
