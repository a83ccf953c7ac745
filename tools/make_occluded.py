"""Writes an occluded copy of an aligned test set, for `config.eval_sets`.

  python tools/make_occluded.py --csv=data/raf/test.csv --image_dir=RAF/basic/Image/aligned \\
      --out=data/raf_mask --kind=mask|eyes|patch [--area=0.25] [--seed=0] [--color=R,G,B]

Kinds, placed by the geometry of an aligned face crop (eyes at about 35-45% of the height,
nose tip at about 60%, chin near the bottom edge; RAF-DB's aligned images and AffectNet's
crops):
- mask: a surgical-mask shape over the lower face, from just below the nose to the chin,
  with a curved upper edge, in a plain colour (light blue by default);
- eyes: a bar across both eyes (black by default);
- patch: random rectangles (black by default) whose union covers --area of the image.
Every image is written as PNG (lossless: outside the occluded region each pixel is the
decoded original's) to OUT/images/<subDirectory_filePath with .png>, and OUT/<csv name>
keeps every column of the input CSV with the paths pointing there. OUT/examples.png shows
originals beside their occluded copies. The result depends only on --seed (each image's
patches are drawn from (seed, row)). Evaluate it with, in a config file,

  config.eval_sets = {"mask": {"csv": "data/raf_mask/test.csv",
                               "image_dir": "data/raf_mask/images"}}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

# Run as a plain script the interpreter puts tools/ on sys.path, not the repository root.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools.release_common import (  # noqa: E402
    ReleaseError,
    build_parser,
    default_workers,
    ordered_map,
    progress,
    write_csv,
)

KINDS = ("mask", "eyes", "patch")
DEFAULT_COLORS = {"mask": (170, 205, 230), "eyes": (0, 0, 0), "patch": (0, 0, 0)}

# Aligned-face geometry, as fractions of (width, height).
# Mask: upper edge a curve from the cheeks (MASK_TOP_SIDE) rising to just below the nose
# tip (MASK_TOP_CENTRE); sides down the jaw to MASK_JAW; lower edge a curve under the chin.
MASK_LEFT, MASK_RIGHT = 0.10, 0.90
MASK_TOP_SIDE, MASK_TOP_CENTRE = 0.68, 0.62
MASK_JAW_LEFT, MASK_JAW_RIGHT, MASK_JAW_Y = 0.18, 0.82, 0.86
MASK_CHIN_Y = 1.0
# Eye bar: (left, top, right, bottom).
EYES_BAR = (0.06, 0.28, 0.94, 0.52)
# Patches: how many, their aspect ratio range, places tried for each, and the share of
# the image that may stay uncovered below the target.
PATCH_MAX_COUNT = 3
PATCH_ASPECT = (0.5, 2.0)
PATCH_PLACEMENT_TRIES = 16
PATCH_TOLERANCE = 0.005
_MAX_PATCHES = 200
_CURVE_POINTS = 24
_EXAMPLE_CELL = 112


def _curve(start, control, end) -> list[tuple[float, float]]:
    """Points of the quadratic Bézier curve from `start` to `end` pulled towards `control`."""
    t = np.linspace(0.0, 1.0, _CURVE_POINTS)[:, None]
    points = (1 - t) ** 2 * np.array(start) + 2 * (1 - t) * t * np.array(control)
    points = points + t**2 * np.array(end)
    return [tuple(point) for point in points]


def mask_polygon() -> list[tuple[float, float]]:
    """The mask's outline in fractions of (width, height), clockwise from the left cheek."""
    # A quadratic curve passes halfway between its end points' mean and its control point.
    top_control = (0.5, 2 * MASK_TOP_CENTRE - MASK_TOP_SIDE)
    bottom_control = (0.5, 2 * MASK_CHIN_Y - MASK_JAW_Y)
    top = _curve((MASK_LEFT, MASK_TOP_SIDE), top_control, (MASK_RIGHT, MASK_TOP_SIDE))
    bottom = _curve((MASK_JAW_RIGHT, MASK_JAW_Y), bottom_control, (MASK_JAW_LEFT, MASK_JAW_Y))
    return top + bottom


def occlusion_region(
    kind: str, height: int, width: int, rng: np.random.Generator, area: float = 0.25
) -> np.ndarray:
    """The (height, width) bool array of the pixels the occluder covers.

    Args:
      kind: mask, eyes or patch.
      height, width: the image size.
      rng: draws the patches (mask and eyes are fixed shapes).
      area: the share of the image the patches cover (patch only).
    """
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "mask":
        draw.polygon([(x * width, y * height) for x, y in mask_polygon()], fill=1)
        return np.asarray(canvas, dtype=bool)
    if kind == "eyes":
        left, top, right, bottom = EYES_BAR
        region = np.zeros((height, width), bool)
        rows = slice(round(top * height), round(bottom * height))
        region[rows, round(left * width) : round(right * width)] = True
        return region
    if kind == "patch":
        return _patches(height, width, rng, area)
    raise ValueError(f"kind={kind!r} is not one of {KINDS}")


def _patches(height: int, width: int, rng: np.random.Generator, area: float) -> np.ndarray:
    """1 to PATCH_MAX_COUNT random rectangles whose union covers `area` of the image.

    The target area is split at random between the rectangles, each placed where it overlaps
    the others least (of PATCH_PLACEMENT_TRIES random places). Any shortfall (from overlap or
    whole-pixel sides) is topped up with rectangles no larger than what remains, so the
    union never exceeds the target and ends within PATCH_TOLERANCE of it.
    """
    if not 0.0 < area < 1.0:
        raise ValueError(f"area={area} must lie in (0, 1)")
    region = np.zeros((height, width), bool)
    target = area * height * width
    count = int(rng.integers(1, PATCH_MAX_COUNT + 1))
    for share in rng.dirichlet(np.ones(count)):
        _add_rectangle(region, share * target, rng)
    stop = max(1.0, PATCH_TOLERANCE * height * width)
    for _ in range(_MAX_PATCHES):
        remaining = target - region.sum()
        if remaining < stop:
            break
        _add_rectangle(region, remaining, rng)
    return region


def _add_rectangle(region: np.ndarray, size: float, rng: np.random.Generator) -> None:
    """Sets a random rectangle of at most `size` pixels in `region`, overlapping it least."""
    height, width = region.shape
    aspect = np.exp(rng.uniform(*np.log(PATCH_ASPECT)))  # width / height
    patch_w = int(min(width, max(1, np.floor(np.sqrt(size * aspect)))))
    patch_h = int(min(height, max(1, np.floor(size / patch_w))))
    tops = rng.integers(0, height - patch_h + 1, PATCH_PLACEMENT_TRIES)
    lefts = rng.integers(0, width - patch_w + 1, PATCH_PLACEMENT_TRIES)
    overlaps = [
        region[top : top + patch_h, left : left + patch_w].sum()
        for top, left in zip(tops, lefts, strict=True)
    ]
    best = int(np.argmin(overlaps))
    region[tops[best] : tops[best] + patch_h, lefts[best] : lefts[best] + patch_w] = True


def occlude(
    image: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    area: float = 0.25,
    color: tuple[int, int, int] | None = None,
) -> np.ndarray:
    """A copy of the (H, W, 3) uint8 `image` with the occluder painted in a plain colour."""
    region = occlusion_region(kind, image.shape[0], image.shape[1], rng, area)
    occluded = image.copy()
    occluded[region] = DEFAULT_COLORS[kind] if color is None else color
    return occluded


def image_rng(seed: int, row: int) -> np.random.Generator:
    """The generator of one image: a function of (seed, row) only, not of processing order."""
    return np.random.default_rng([seed, row])


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def examples_grid(pairs: list[tuple[np.ndarray, np.ndarray]], columns: int = 4) -> Image.Image:
    """Original | occluded pairs, `columns` pairs per row, each image in a square cell."""
    cell = _EXAMPLE_CELL
    rows = -(-len(pairs) // columns)
    grid = Image.new("RGB", (min(len(pairs), columns) * 2 * cell, rows * cell), (255, 255, 255))
    for index, pair in enumerate(pairs):
        for side, array in enumerate(pair):
            x = ((index % columns) * 2 + side) * cell
            grid.paste(Image.fromarray(array).resize((cell, cell)), (x, (index // columns) * cell))
    return grid


def _parse_color(text: str) -> tuple[int, int, int]:
    try:
        color = tuple(int(part) for part in text.split(","))
    except ValueError:
        color = ()
    if len(color) != 3 or not all(0 <= c <= 255 for c in color):
        raise ReleaseError(f"--color={text!r} is not R,G,B with values in 0..255")
    return color


def main(argv: list[str] | None = None) -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--csv", required=True, help="Test CSV (subDirectory_filePath, ...).")
    parser.add_argument("--image_dir", required=True, help="Folder the CSV's paths are in.")
    parser.add_argument("--out", required=True, help="Output folder.")
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--area", type=float, default=0.25, help="Patch area fraction.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--color", help="R,G,B of the occluder (default: by kind).")
    parser.add_argument("--examples", type=int, default=8, help="Pairs in examples.png.")
    parser.add_argument("--workers", type=int, default=default_workers(), help="Threads.")
    args = parser.parse_args(argv)
    csv_path, image_dir, out = Path(args.csv), Path(args.image_dir), Path(args.out)
    try:
        if args.kind == "patch" and not 0.0 < args.area < 1.0:
            raise ReleaseError(f"--area={args.area} must lie in (0, 1)")
        color = _parse_color(args.color) if args.color else None
        if (out / csv_path.name).resolve() == csv_path.resolve():
            raise ReleaseError(f"--out={out} would overwrite the input {csv_path}")
        frame = _read_csv(csv_path)
        sources = [image_dir / name for name in frame["subDirectory_filePath"]]
        missing = [row for row, path in enumerate(sources) if not path.is_file()]
        if missing:
            row = missing[0]
            raise ReleaseError(
                f"{csv_path}:{row + 2}: image {sources[row]} is missing "
                f"({len(missing)} of {len(frame)} images are missing)"
            )
        targets = [str(Path(name).with_suffix(".png")) for name in frame["subDirectory_filePath"]]
        duplicated = pd.Series(targets).duplicated().to_numpy()
        if duplicated.any():
            row = int(np.argmax(duplicated))
            raise ReleaseError(
                f"{csv_path}:{row + 2}: {targets[row]} would be written twice (the CSV lists "
                "the same image, or two that differ only in extension)"
            )
    except ValueError as error:
        parser.error(str(error))

    image_out = out / "images"
    examples = []

    def work(row: int) -> tuple[np.ndarray, np.ndarray]:
        original = load_rgb(sources[row])
        occluded = occlude(original, args.kind, image_rng(args.seed, row), args.area, color)
        target = image_out / targets[row]
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(occluded).save(target)
        return original, occluded

    rows = range(len(frame))
    for row, pair in zip(
        rows,
        progress(ordered_map(work, rows, args.workers), len(frame), f"occluding ({args.kind})"),
        strict=True,
    ):
        if row < args.examples:
            examples.append(pair)
    out.mkdir(parents=True, exist_ok=True)
    if examples:
        examples_grid(examples).save(out / "examples.png")
    out_csv = out / csv_path.name
    write_csv(frame.assign(subDirectory_filePath=targets), out_csv)
    print(f"wrote {len(frame)} {args.kind}-occluded images to {image_out}, {out_csv}")
    print(f"examples: {out / 'examples.png'}")
    print(
        f'config.eval_sets = {{"{args.kind}": {{"csv": "{out_csv}", "image_dir": "{image_out}"}}}}'
    )


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ReleaseError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ReleaseError(f"{path}: not a readable CSV ({error})") from None
    if "subDirectory_filePath" not in frame:
        raise ReleaseError(
            f"{path}:1: no `subDirectory_filePath` column; found {list(frame.columns)}"
        )
    if frame.empty:
        raise ReleaseError(f"{path}: no data rows")
    return frame


if __name__ == "__main__":
    main()
