"""Converts an AffectNet release into ldl_jax's train.csv and test.csv.

  python tools/prepare_affectnet.py --root=AffectNet --out=data/affectnet [--classes=7|8]
      [--num_neighbors=20] [--crop] [--layout=auto|csv|npy] [--image_dir=DIR]

Both releases in circulation are read (--layout=auto tells them apart):
- csv: Manually_Annotated_file_lists/training.csv and validation.csv (columns
  subDirectory_filePath, face_x, face_y, face_width, face_height, facial_landmarks,
  expression 0..10, valence, arousal). The copies in circulation start with the header line
  `#subDirectory_filePath,face_x,...` (public loaders read the column as
  "#subDirectory_filePath"); some have validation.csv without a header line, read in that
  order. The images are under Manually_Annotated_Images/, which some copies have one folder
  deeper (Manually_Annotated/Manually_Annotated_Images/): the folder holding the listed images
  is found among ROOT/Manually_Annotated_Images and ROOT/*/Manually_Annotated_Images, or given
  with --image_dir. With --crop, each kept image's face box is cut out to
  OUT/images/<subDirectory_filePath> and the CSVs point there.
- npy: train_set/ and val_set/, each with images/N.jpg and annotations/N_exp.npy, N_val.npy,
  N_aro.npy (and N_lnd.npy, not needed); the images are face crops already.

AffectNet's expression order is ldl_jax's: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear,
5 Disgust, 6 Anger, 7 Contempt. Rows labelled 8..10 (None, Uncertain, No-Face) are dropped,
and Contempt too for --classes=7; so are rows whose valence or arousal is AffectNet's invalid
marker -2, and rows with NULL in the face box or landmarks (AffectNet's mark of a face it did
not locate). Every kept image is then decoded once, in parallel, with the trainer's decoder
(tools/release_images.py): an empty file, a file that is no JPEG/PNG/GIF/BMP image or one that
does not decode is left out and listed in OUT/skipped.csv with its reason, so one bad file
neither stops the conversion nor reaches training. OUT/train.csv gets subDirectory_filePath,
expression, valence, arousal and the knn column (the --num_neighbors nearest training rows in VA
space: exact L1, self excluded, nearest first, ties by row index); OUT/test.csv is AffectNet's
validation set, the usual test set (same columns without knn). Counts per split and class, and
of the rows dropped for each reason, are printed, with the image folder to pass as
--config.data.image_dir.

Malformed input (a bad field, a label outside 0..10, a valence/arousal outside [-1, 1] other
than -2, a missing image or annotation file) is refused naming the file and line (csv) or
the annotation file (npy); nothing is written then. --skip_missing drops rows whose image
is missing instead, and says how many.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

# Run as a plain script the interpreter puts tools/ on sys.path, not the repository root.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

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
from tools.release_images import SKIP_REASONS, decode_image  # noqa: E402

CSV_LISTS = Path("Manually_Annotated_file_lists")
CSV_IMAGES = Path("Manually_Annotated_Images")
CSV_SPLITS = {"train": "training.csv", "test": "validation.csv"}
CSV_COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
BOX_COLUMNS = ("face_x", "face_y", "face_width", "face_height")
# Columns in which AffectNet writes NULL for a face it did not locate.
FACE_COLUMNS = (*BOX_COLUMNS, "facial_landmarks")
NULL_FACE = "face box/landmarks NULL"
BOX_OUTSIDE = "face box outside the image"
SKIPPED_FILE = "skipped.csv"
# How many of the first listed images decide which candidate folder holds the images.
_IMAGE_DIR_PROBES = 20
NPY_SPLITS = {"train": "train_set", "test": "val_set"}
NUM_LABELS = 11  # 0..7 expressions, 8 None, 9 Uncertain, 10 No-Face
INVALID_VA = -2.0
_MISSING_SHOWN = 5


@dataclasses.dataclass
class Split:
    """One split's rows as read (before filtering). `where` names each row's source; `boxes`
    holds the face box of each row (None without --crop or where it is NULL)."""

    paths: list[str] = dataclasses.field(default_factory=list)
    labels: list[int] = dataclasses.field(default_factory=list)
    va: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    where: list[str] = dataclasses.field(default_factory=list)
    boxes: list[tuple[int, int, int, int] | None] = dataclasses.field(default_factory=list)
    null_face: list[bool] = dataclasses.field(default_factory=list)

    def add(self, path, label, va, where, box=None, null_face=False):
        self.paths.append(path)
        self.labels.append(label)
        self.va.append(va)
        self.where.append(where)
        self.boxes.append(box)
        self.null_face.append(null_face)


def detect_layout(root: Path) -> str:
    if (root / CSV_LISTS).is_dir():
        return "csv"
    if all((root / folder).is_dir() for folder in NPY_SPLITS.values()):
        return "npy"
    raise ReleaseError(
        f"{root}: not an AffectNet release: found neither {CSV_LISTS}/ nor "
        f"{' and '.join(NPY_SPLITS.values())}/"
    )


def _parse_label(text: str, where: str) -> int:
    try:
        label = int(str(text).strip())
    except ValueError:
        raise ReleaseError(f"{where}: expression {text!r} is not an integer") from None
    if not 0 <= label < NUM_LABELS:
        raise ReleaseError(f"{where}: expression {label} is outside 0..10")
    return label


def _parse_va(text, name: str, where: str) -> float:
    """One valence or arousal value: in [-1, 1], or the invalid marker -2."""
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ReleaseError(f"{where}: {name} {text!r} is not a number") from None
    if value != INVALID_VA and not -1.0 <= value <= 1.0:
        raise ReleaseError(
            f"{where}: {name} {value} is outside [-1, 1] (and not the invalid marker -2)"
        )
    return value


def read_csv_split(path: Path, crop: bool) -> Split:
    """Reads training.csv or validation.csv of the manual-annotation release."""
    try:
        handle = path.open(newline="")
    except OSError as error:
        raise ReleaseError(f"{path}: cannot read ({error})") from error
    split = Split()
    with handle:
        reader = csv.reader(handle)
        first = next(reader, None)
        if first is None:
            raise ReleaseError(f"{path}: the file is empty")
        if first and first[0].strip().lstrip("#").strip() == CSV_COLUMNS[0]:
            columns = [name.strip() for name in first]
            columns[0] = CSV_COLUMNS[0]  # the copies in circulation write `#subDirectory_filePath`
            rows = reader
        else:  # validation.csv of some copies has no header line
            columns = list(CSV_COLUMNS)
            rows = _prepend(first, reader)
        needed = ["subDirectory_filePath", "expression", "valence", "arousal"]
        needed += list(BOX_COLUMNS) if crop else []
        missing = [name for name in needed if name not in columns]
        if missing:
            raise ReleaseError(f"{path}:1: missing column(s) {missing}; found {columns}")
        index = {name: columns.index(name) for name in needed}
        face_columns = [columns.index(name) for name in FACE_COLUMNS if name in columns]
        for fields in rows:
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            where = f"{path}:{reader.line_num}"
            if len(fields) != len(columns):
                raise ReleaseError(
                    f"{where}: malformed row: {len(fields)} fields, the header has {len(columns)}"
                )
            label = _parse_label(fields[index["expression"]], where)
            va = (
                _parse_va(fields[index["valence"]], "valence", where),
                _parse_va(fields[index["arousal"]], "arousal", where),
            )
            null_face = any("NULL" in fields[column].upper() for column in face_columns)
            box = None
            if crop and not null_face:
                box = _parse_box([fields[index[name]] for name in BOX_COLUMNS], where)
            image = fields[index["subDirectory_filePath"]].strip()
            if not image:
                raise ReleaseError(f"{where}: empty subDirectory_filePath")
            split.add(image, label, va, where, box, null_face)
    if not split.paths:
        raise ReleaseError(f"{path}: no data rows")
    return split


def _prepend(first, rows):
    yield first
    yield from rows


def _parse_box(texts: list[str], where: str) -> tuple[int, int, int, int]:
    try:
        x, y, width, height = (int(round(float(text))) for text in texts)
    except ValueError:
        raise ReleaseError(f"{where}: face box {texts} is not four numbers") from None
    if width <= 0 or height <= 0:
        raise ReleaseError(f"{where}: face box {texts} has no area")
    return x, y, width, height


def _npy_value(path: Path):
    """The scalar in one annotation .npy (numbers or, as released, strings like '5')."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ReleaseError(f"{path}: annotation file is missing") from None
    except (OSError, ValueError) as error:
        raise ReleaseError(f"{path}: not a readable .npy file ({error})") from None
    if array.size != 1:
        raise ReleaseError(f"{path}: holds {array.size} values, expected 1")
    value = array.reshape(()).item()
    if isinstance(value, bytes):
        value = value.decode()
    return value


def read_npy_split(root: Path, folder: str) -> Split:
    """Reads one split (train_set or val_set) of the per-image npy release."""
    annotations = root / folder / "annotations"
    if not annotations.is_dir():
        raise ReleaseError(f"{annotations}: no such folder")
    ids = sorted(
        (path.name.removesuffix("_exp.npy") for path in annotations.glob("*_exp.npy")),
        key=lambda name: (not name.isdigit(), int(name) if name.isdigit() else 0, name),
    )
    if not ids:
        raise ReleaseError(f"{annotations}: no *_exp.npy annotation files")
    split = Split()
    for image_id in progress(ids, len(ids), f"reading {folder}"):
        exp_path = annotations / f"{image_id}_exp.npy"
        where = str(exp_path)
        label = _parse_label(_npy_value(exp_path), where)
        va_paths = [annotations / f"{image_id}_{suffix}.npy" for suffix in ("val", "aro")]
        va = tuple(
            _parse_va(_npy_value(path), name, str(path))
            for path, name in zip(va_paths, ("valence", "arousal"), strict=True)
        )
        split.add(f"{folder}/images/{image_id}.jpg", label, va, where)
    return split


def select(split: Split, num_classes: int) -> tuple[np.ndarray, dict[str, int]]:
    """Indices of the rows kept, and the number dropped per reason."""
    labels = np.asarray(split.labels)
    va = np.asarray(split.va, dtype=np.float64).reshape(-1, 2)
    no_class = labels >= 8
    contempt = labels == 7 if num_classes == 7 else np.zeros_like(no_class)
    invalid_va = (va == INVALID_VA).any(axis=1) & ~no_class & ~contempt
    null_face = np.asarray(split.null_face) & ~(no_class | contempt | invalid_va)
    kept = ~(no_class | contempt | invalid_va | null_face)
    dropped = {"None/Uncertain/No-Face (8-10)": int(no_class.sum())}
    if num_classes == 7:
        dropped["Contempt (7)"] = int(contempt.sum())
    dropped["valence/arousal -2"] = int(invalid_va.sum())
    dropped[NULL_FACE] = int(null_face.sum())
    return np.flatnonzero(kept), dropped


def find_image_dir(root: Path, split: Split) -> Path:
    """The folder the csv release's image paths are relative to: of ROOT/Manually_Annotated_Images
    and ROOT/*/Manually_Annotated_Images, the one holding most of the first listed images."""
    candidates = [root / CSV_IMAGES, *sorted(root.glob(f"*/{CSV_IMAGES}"))]
    probes = split.paths[:_IMAGE_DIR_PROBES]
    found = {
        folder: sum((folder / path).is_file() for path in probes)
        for folder in candidates
        if folder.is_dir()
    }
    best = max(found, key=found.get, default=None)
    if best is None or found[best] == 0:
        raise ReleaseError(
            f"{root}: none of the first {len(probes)} listed images (e.g. {probes[0]}) is under "
            f"{root / CSV_IMAGES} or {root}/*/{CSV_IMAGES}; pass the image folder as --image_dir"
        )
    return best


def find_missing(split: Split, rows: np.ndarray, image_dir: Path, name: str) -> list[int]:
    return [
        row
        for row in progress(rows, len(rows), f"checking {name} images")
        if not (image_dir / split.paths[row]).is_file()
    ]


def decode_images(
    split: Split, rows: np.ndarray, image_dir: Path, name: str, workers: int, crop_dir=None
) -> list[tuple[int, str, str]]:
    """Decodes the image of every row in `rows` once; with `crop_dir`, writes its face box to
    crop_dir/<subDirectory_filePath>. Returns (row, reason, detail) of each image left out."""

    def prepare(row: int) -> tuple[str, str] | None:
        decoded = decode_image(image_dir / split.paths[row])
        if decoded.reason is not None:
            return decoded.reason, decoded.detail
        if crop_dir is None:
            return None
        return _write_face(decoded.pixels, split.boxes[row], crop_dir / split.paths[row])

    problems = ordered_map(prepare, list(rows), workers)
    return [
        (row, *problem)
        for row, problem in zip(
            rows, progress(problems, len(rows), f"decoding {name} images"), strict=True
        )
        if problem is not None
    ]


def _write_face(pixels: np.ndarray, box, target: Path) -> tuple[str, str] | None:
    """Writes the face box of `pixels`, clipped to the image; a box outside it is a problem."""
    x, y, width, height = box
    image_height, image_width = pixels.shape[:2]
    left, top = max(x, 0), max(y, 0)
    right, bottom = min(x + width, image_width), min(y + height, image_height)
    if left >= right or top >= bottom:
        return BOX_OUTSIDE, f"box {box}, image {image_width}x{image_height}"
    target.parent.mkdir(parents=True, exist_ok=True)
    face = Image.fromarray(pixels[top:bottom, left:right])
    if target.suffix.lower() in (".jpg", ".jpeg"):
        face.save(target, quality=95)
    else:
        face.save(target)
    return None


def skipped_table(splits: dict[str, Split], skipped: dict[str, list]) -> pd.DataFrame:
    """One row per image left out at decoding: split, source line, image, reason, detail."""
    records = [
        (name, splits[name].where[row], splits[name].paths[row], reason, detail)
        for name, problems in skipped.items()
        for row, reason, detail in problems
    ]
    columns = ["split", "source", "subDirectory_filePath", "reason", "detail"]
    return pd.DataFrame.from_records(records, columns=columns)


def usable_rows(split: Split, name: str, args, image_dir: Path, crop_dir: Path | None):
    """The rows of `split` to keep, the number dropped per reason, and the images skipped at
    decoding as (row, reason, detail).

    Raises:
      ReleaseError: a kept row's image is missing (without --skip_missing), or nothing is left.
    """
    kept, dropped = select(split, args.classes)
    missing = find_missing(split, kept, image_dir, name)
    if missing and not args.skip_missing:
        shown = "; ".join(
            f"{split.where[row]}: {image_dir / split.paths[row]}"
            for row in missing[:_MISSING_SHOWN]
        )
        raise ReleaseError(
            f"{split.where[missing[0]]}: image is missing ({len(missing)} of {len(kept)} kept "
            f"{name} images are missing; --skip_missing drops them): {shown}"
        )
    dropped["image missing"] = len(missing)
    kept = np.setdiff1d(kept, missing)
    skipped = decode_images(split, kept, image_dir, name, args.workers, crop_dir)
    for reason in (*SKIP_REASONS, *([BOX_OUTSIDE] if crop_dir is not None else [])):
        dropped[reason] = sum(problem[1] == reason for problem in skipped)
    kept = np.setdiff1d(kept, [problem[0] for problem in skipped])
    if kept.size == 0:
        raise ReleaseError(f"{args.root}: no {name} rows left after filtering")
    return kept, dropped, skipped


def table(split: Split, rows: np.ndarray) -> pd.DataFrame:
    va = np.asarray(split.va, dtype=np.float64).reshape(-1, 2)[rows]
    return pd.DataFrame(
        {
            "subDirectory_filePath": [split.paths[row] for row in rows],
            "expression": np.asarray(split.labels, dtype=np.int64)[rows],
            "valence": va[:, 0],
            "arousal": va[:, 1],
        }
    )


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--root", required=True, help="The release's top folder.")
    parser.add_argument("--out", required=True, help="Folder for train.csv and test.csv.")
    parser.add_argument("--classes", type=int, choices=(7, 8), default=7)
    parser.add_argument("--num_neighbors", type=int, default=20, help="kNN list length.")
    parser.add_argument("--crop", action="store_true", help="Cut out the face boxes (csv).")
    parser.add_argument("--layout", choices=("auto", "csv", "npy"), default="auto")
    parser.add_argument(
        "--skip_missing", action="store_true", help="Drop rows whose image is missing."
    )
    parser.add_argument(
        "--image_dir", help="The folder the csv release's image paths are relative to."
    )
    parser.add_argument("--workers", type=int, default=default_workers(), help="Decode threads.")
    args = parser.parse_args(argv)
    root, out = Path(args.root), Path(args.out)
    try:
        layout = detect_layout(root) if args.layout == "auto" else args.layout
        if layout == "csv":
            splits = {
                name: read_csv_split(root / CSV_LISTS / file, args.crop)
                for name, file in CSV_SPLITS.items()
            }
            image_dir = (
                Path(args.image_dir) if args.image_dir else find_image_dir(root, splits["train"])
            )
        else:
            if args.crop:
                raise ReleaseError(
                    f"{root}: --crop applies to the csv release; the npy release's images "
                    "are face crops already"
                )
            image_dir = Path(args.image_dir) if args.image_dir else root
            splits = {name: read_npy_split(root, folder) for name, folder in NPY_SPLITS.items()}
        crop_dir = out / "images" if args.crop else None
        dropped, frames, skipped = {}, {}, {}
        for name, split in splits.items():
            kept, dropped[name], skipped[name] = usable_rows(split, name, args, image_dir, crop_dir)
            frames[name] = table(split, kept)
        frames["train"] = add_knn_column(frames["train"], args.num_neighbors, "train.csv")
        if crop_dir is not None:
            image_dir = crop_dir
    except ValueError as error:
        parser.error(str(error))
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        write_csv(frame, out / f"{name}.csv")
    skipped_rows = skipped_table(splits, skipped)
    write_csv(skipped_rows, out / SKIPPED_FILE)
    print(f"layout: {layout}, {args.classes} classes")
    print(count_table({s: f["expression"].to_numpy() for s, f in frames.items()}, args.classes))
    for name in frames:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in dropped[name].items())
        print(f"dropped from {name}: {reasons}")
    print(f"wrote {out / 'train.csv'} and {out / 'test.csv'}")
    print(f"{len(skipped_rows)} images that do not decode are listed in {out / SKIPPED_FILE}")
    print(f"image_dir: {image_dir.resolve()}  (--config.data.image_dir)")


if __name__ == "__main__":
    main()
