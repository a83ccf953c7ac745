"""A procedural facial-expression dataset, so that training needs no download.

Every sample gets one of the 7 basic expressions (AffectNet order: 0 Neutral,
1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger), a valence and arousal
drawn near that expression's place on the circumplex, and a cartoon face whose
mouth, eyes and brows follow partly the expression and partly the valence and
arousal. Faces of classes that sit close in VA space therefore look alike, and
some samples mix two expressions, so the classes overlap the way real ones do.
Face shape, skin, hair, pose, lighting, noise, occluders and background vary
independently of the label.

The files follow the reference repository's layout::

    out_dir/images/train/00000.jpg ...
    out_dir/images/test/00000.jpg ...
    out_dir/images/val/00000.jpg ...   (only when num_val > 0)
    out_dir/train.csv   subDirectory_filePath, expression, valence, arousal, knn
    out_dir/test.csv    subDirectory_filePath, expression, valence, arousal
    out_dir/val.csv     same columns as test.csv

``knn`` lists the ``num_neighbors`` nearest other training rows in VA space
(L1 distance on the values as written, nearest first, ties by row index).
Everything is a pure function of the seed: each sample draws from its own
random generator keyed by (seed, split, index).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ldl_jax.va_knn import format_knn_column, knn_in_va_space

CLASS_NAMES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")
NUM_CLASSES = len(CLASS_NAMES)

# Split name -> key mixed into every random stream of that split, so adding a
# validation split leaves the training and test samples unchanged.
_SPLIT_KEYS = {"train": 0, "test": 1, "val": 2}

# Share of each class in a split, by name of the class balance. "default" is mildly
# imbalanced; "rafdb" follows RAF-DB's training split (12,271 images: Happy 39%, Fear 2.3%),
# the imbalance under which a method must not sacrifice the rare classes.
CLASS_BALANCES = {
    "default": np.array([0.19, 0.27, 0.12, 0.11, 0.08, 0.09, 0.14]),
    "rafdb": np.array([2524, 4772, 1982, 1290, 281, 717, 705]) / 12271,
}

# Circumplex centre (valence, arousal) and spread of each class.
_VA_CENTERS = np.array(
    [
        [0.00, 0.00],  # Neutral
        [0.65, 0.30],  # Happy
        [-0.60, -0.35],  # Sad
        [0.15, 0.70],  # Surprise
        [-0.50, 0.70],  # Fear
        [-0.65, 0.30],  # Disgust
        [-0.55, 0.55],  # Anger
    ]
)
_VA_SPREAD = np.array([0.14, 0.18, 0.17, 0.16, 0.15, 0.15, 0.16])


@dataclasses.dataclass(frozen=True)
class _Expression:
    """Facial action parameters, each roughly in [-1.5, 1.5].

    Attributes:
        mouth_curve: Corners up (> 0, smile) or down (< 0, frown).
        mouth_open: Jaw drop; 0 is closed lips.
        mouth_width: Relative mouth width (1 is neutral).
        eye_open: Relative eye opening (1 is neutral).
        brow_raise: Brows up (> 0) or lowered (< 0).
        brow_tilt: Inner brow ends down (> 0, frowning) or up (< 0, worried).
        teeth: Visible teeth inside an open mouth (> 0.5 shows them).
        wrinkle: Nose-bridge wrinkles (disgust).
        asymmetry: One-sided upper-lip raise (disgust).
    """

    mouth_curve: float
    mouth_open: float
    mouth_width: float
    eye_open: float
    brow_raise: float
    brow_tilt: float
    teeth: float
    wrinkle: float
    asymmetry: float


_NUM_FEATURES = len(dataclasses.fields(_Expression))

# Prototype action parameters per class, columns in _Expression field order.
_CLASS_FEATURES = np.array(
    [
        [0.00, 0.00, 1.00, 1.00, 0.00, 0.00, 0.0, 0.0, 0.0],  # Neutral
        [1.00, 0.45, 1.20, 0.70, 0.10, -0.10, 1.0, 0.0, 0.0],  # Happy
        [-0.80, 0.05, 0.90, 0.75, 0.10, -0.80, 0.0, 0.0, 0.0],  # Sad
        [0.00, 1.00, 0.70, 1.50, 1.00, -0.20, 0.0, 0.0, 0.0],  # Surprise
        [-0.30, 0.60, 1.25, 1.40, 0.60, -0.70, 0.5, 0.0, 0.0],  # Fear
        [-0.40, 0.20, 0.95, 0.65, -0.30, 0.40, 0.4, 1.0, 1.0],  # Disgust
        [-0.50, 0.15, 0.90, 0.70, -0.40, 1.00, 0.6, 0.2, 0.0],  # Anger
    ]
)

# Per-feature standard deviation of the sample-to-sample jitter.
_FEATURE_JITTER = np.array([0.22, 0.12, 0.10, 0.14, 0.20, 0.22, 0.25, 0.25, 0.25])

# Weight of the valence-arousal driven part of the features (the rest is the
# class prototype). Larger values make classes close in VA look more alike.
_VA_COUPLING = 0.35

# Chance that a sample's face mixes in a second, VA-nearby expression, and the
# range of that expression's weight: these are the genuinely ambiguous faces.
_BLEND_PROBABILITY = 0.3
_BLEND_WEIGHT_RANGE = (0.15, 0.55)
# Temperature (in VA units) of the choice of the second expression.
_BLEND_TEMPERATURE = 0.4

# Faces are drawn this many times larger, then downsampled with antialiasing.
_SUPERSAMPLING = 3
_JPEG_QUALITY = 95
_MIN_IMAGE_SIZE = 16


def _fit_va_to_features() -> np.ndarray:
    """Fits the affine map from (1, valence, arousal) to class features.

    Returns:
        (3, F) least-squares coefficients over the class prototypes, so that
        ``[1, v, a] @ coefficients`` gives the features a face "at" (v, a)
        would have regardless of its class.
    """
    design = np.column_stack([np.ones(NUM_CLASSES), _VA_CENTERS])
    coefficients, *_ = np.linalg.lstsq(design, _CLASS_FEATURES, rcond=None)
    return coefficients


_VA_TO_FEATURES = _fit_va_to_features()


def make_synthetic_fer(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_train: int = 2000,
    num_test: int = 500,
    num_val: int = 0,
    image_size: int = 64,
    num_neighbors: int = 20,
    class_balance: str = "default",
) -> dict:
    """Generates the synthetic FER dataset into ``out_dir``.

    The dataset is written into a temporary folder next to ``out_dir`` and
    renamed into place at the end, so an interrupted run never leaves a
    complete-looking half dataset.

    Args:
        out_dir: Folder to create; must not exist or be empty.
        seed: Non-negative seed of every random choice; equal seeds give
            equal files.
        num_train: Training images.
        num_test: Test images.
        num_val: Validation images; no validation split when 0.
        image_size: Side of the square RGB images in pixels.
        num_neighbors: VA neighbours stored per training row.
        class_balance: A key of ``CLASS_BALANCES``: the share of each class.

    Returns:
        Summary with ``out_dir``, ``image_dir``, ``csv`` (split -> CSV path),
        ``counts`` (split -> images) and ``class_counts`` (split -> images per
        class, in class order).

    Raises:
        ValueError: If ``out_dir`` exists and is not an empty folder, or an
            argument is out of range.
    """
    _check_arguments(seed, num_train, num_test, num_val, image_size, num_neighbors)
    if class_balance not in CLASS_BALANCES:
        raise ValueError(f"class_balance={class_balance!r} is not one of {sorted(CLASS_BALANCES)}")
    frequencies = CLASS_BALANCES[class_balance]
    out_path = Path(out_dir)
    _check_output_folder(out_path)
    split_sizes = {"train": num_train, "test": num_test}
    if num_val > 0:
        split_sizes["val"] = num_val

    out_path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", dir=out_path.parent))
    try:
        class_counts = {
            split: _write_split(staging, split, size, seed, image_size, num_neighbors, frequencies)
            for split, size in split_sizes.items()
        }
        if out_path.exists():
            out_path.rmdir()
        staging.rename(out_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    return {
        "out_dir": str(out_path),
        "image_dir": str(out_path / "images"),
        "csv": {split: str(out_path / f"{split}.csv") for split in split_sizes},
        "counts": dict(split_sizes),
        "class_counts": class_counts,
    }


def _check_arguments(
    seed: int,
    num_train: int,
    num_test: int,
    num_val: int,
    image_size: int,
    num_neighbors: int,
) -> None:
    """Raises ValueError for a seed, split size or option that cannot work."""
    if seed < 0:
        raise ValueError(f"seed must not be negative; got {seed}.")
    if num_neighbors < 1:
        raise ValueError(f"num_neighbors must be at least 1; got {num_neighbors}.")
    if num_train <= num_neighbors:
        raise ValueError(
            f"num_train ({num_train}) must exceed num_neighbors ({num_neighbors}): "
            "every training row needs that many other rows as neighbours."
        )
    if num_test < 1:
        raise ValueError(f"num_test must be at least 1; got {num_test}.")
    if num_val < 0:
        raise ValueError(f"num_val must not be negative; got {num_val}.")
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE}; got {image_size}.")


def _check_output_folder(out_path: Path) -> None:
    """Refuses an output path that holds anything already."""
    if out_path.exists() and (not out_path.is_dir() or any(out_path.iterdir())):
        raise ValueError(
            f"Output folder {out_path} already exists and is not empty; "
            "choose a new folder or remove the old dataset first."
        )


def _write_split(
    root: Path,
    split: str,
    size: int,
    seed: int,
    image_size: int,
    num_neighbors: int,
    frequencies: np.ndarray,
) -> list[int]:
    """Renders one split's images and writes its CSV.

    Returns:
        Images per class, in class order.
    """
    image_dir = root / "images" / split
    image_dir.mkdir(parents=True)
    labels = _split_labels(seed, split, size, frequencies)
    rows = []
    for index, label in enumerate(labels):
        rng = _sample_rng(seed, split, index)
        valence, arousal = _sample_valence_arousal(rng, label)
        expression = _sample_expression(rng, label, valence, arousal)
        pixels = _render_face(rng, expression, image_size)
        file_name = f"{index:05d}.jpg"
        Image.fromarray(pixels).save(image_dir / file_name, quality=_JPEG_QUALITY)
        rows.append([f"{split}/{file_name}", str(label), _format_va(valence), _format_va(arousal)])

    header = ["subDirectory_filePath", "expression", "valence", "arousal"]
    if split == "train":
        header.append("knn")
        va_as_written = np.array([[float(row[2]), float(row[3])] for row in rows])
        knn = knn_in_va_space(va_as_written, num_neighbors)
        for row, neighbours in zip(rows, format_knn_column(knn), strict=True):
            row.append(neighbours)
    _write_csv(root / f"{split}.csv", header, rows)
    return np.bincount(labels, minlength=NUM_CLASSES).tolist()


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """Writes a CSV with Unix line endings."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _format_va(value: float) -> str:
    """Formats a valence or arousal value with 4 decimals, never as -0.0000."""
    return f"{round(value, 4) + 0.0:.4f}"


def _split_labels(seed: int, split: str, size: int, frequencies: np.ndarray) -> np.ndarray:
    """Returns the shuffled class labels of a split.

    Class counts follow ``frequencies`` by largest remainder, with at
    least one image per class whenever the split holds 7 or more.
    """
    counts = _class_counts(size, frequencies)
    labels = np.repeat(np.arange(NUM_CLASSES), counts)
    order_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEYS[split],)))
    return order_rng.permutation(labels)


def _class_counts(size: int, frequencies: np.ndarray) -> np.ndarray:
    """Splits ``size`` images over the classes by largest remainder."""
    minimum = 1 if size >= NUM_CLASSES else 0
    spare = size - minimum * NUM_CLASSES
    shares = frequencies / frequencies.sum() * spare
    counts = np.floor(shares).astype(np.int64)
    remainder_order = np.argsort(-(shares - counts), kind="stable")
    counts[remainder_order[: spare - counts.sum()]] += 1
    return counts + minimum


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Returns the random generator owned by one sample."""
    sequence = np.random.SeedSequence(seed, spawn_key=(_SPLIT_KEYS[split], index))
    return np.random.default_rng(sequence)


def _sample_valence_arousal(rng: np.random.Generator, label: int) -> tuple[float, float]:
    """Draws a (valence, arousal) pair near the class's circumplex centre."""
    va = rng.normal(_VA_CENTERS[label], _VA_SPREAD[label])
    valence, arousal = np.clip(va, -1.0, 1.0)
    return float(valence), float(arousal)


def _sample_expression(
    rng: np.random.Generator, label: int, valence: float, arousal: float
) -> _Expression:
    """Draws the facial action parameters of one sample.

    The parameters mix the class prototype, the features implied by the
    sample's valence and arousal, sometimes a second expression chosen among
    the classes nearby in VA space, and per-feature jitter.
    """
    prototype = _CLASS_FEATURES[label]
    if rng.random() < _BLEND_PROBABILITY:
        other = _nearby_other_class(rng, label)
        weight = rng.uniform(*_BLEND_WEIGHT_RANGE)
        prototype = (1.0 - weight) * prototype + weight * _CLASS_FEATURES[other]
    va_features = np.array([1.0, valence, arousal]) @ _VA_TO_FEATURES
    features = (1.0 - _VA_COUPLING) * prototype + _VA_COUPLING * va_features
    features = features + rng.normal(0.0, _FEATURE_JITTER)
    return _Expression(*features.tolist())


def _nearby_other_class(rng: np.random.Generator, label: int) -> int:
    """Picks another class, the closer in VA space the likelier."""
    distances = np.abs(_VA_CENTERS - _VA_CENTERS[label]).sum(axis=1)
    weights = np.exp(-distances / _BLEND_TEMPERATURE)
    weights[label] = 0.0
    return int(rng.choice(NUM_CLASSES, p=weights / weights.sum()))


@dataclasses.dataclass(frozen=True)
class _FaceFrame:
    """Maps face coordinates to canvas pixels.

    Face coordinates put the face centre at (0, 0), x to the face's right and
    y downwards; the face outline spans about [-0.8, 0.8] x [-1, 1].

    Attributes:
        center: Canvas position of the face centre, in pixels.
        scale: Pixels per face unit.
        angle: In-plane rotation in radians.
    """

    center: tuple[float, float]
    scale: float
    angle: float

    def points(self, x: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
        """Returns canvas points of the face points (x[i], y[i])."""
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        canvas_x = self.center[0] + self.scale * (cos * x - sin * y)
        canvas_y = self.center[1] + self.scale * (sin * x + cos * y)
        return list(zip(canvas_x.tolist(), canvas_y.tolist(), strict=True))

    def ellipse(
        self, cx: float, cy: float, rx: float, ry: float, steps: int = 48
    ) -> list[tuple[float, float]]:
        """Returns the canvas polygon of an axis-aligned face-space ellipse."""
        t = np.linspace(0.0, 2.0 * np.pi, steps, endpoint=False)
        return self.points(cx + rx * np.cos(t), cy + ry * np.sin(t))

    def width(self, face_units: float) -> int:
        """Converts a stroke width from face units to whole pixels (>= 1)."""
        return max(1, round(face_units * self.scale))


def _render_face(rng: np.random.Generator, expression: _Expression, image_size: int) -> np.ndarray:
    """Draws one face and returns it as a (size, size, 3) uint8 array."""
    canvas_size = image_size * _SUPERSAMPLING
    background = _random_color(rng, low=20, high=235)
    image = Image.new("RGB", (canvas_size, canvas_size), background)
    draw = ImageDraw.Draw(image)
    frame = _random_frame(rng, canvas_size)
    skin = _random_skin(rng)
    hair = _random_color(rng, low=10, high=120)

    _draw_head(draw, frame, rng, skin, hair)
    _draw_eyes(draw, frame, rng, expression)
    _draw_brows(draw, frame, expression, hair)
    _draw_nose(draw, frame, expression, skin)
    _draw_mouth(draw, frame, expression, skin)
    if rng.random() < 0.15:
        _draw_occluder(draw, frame, rng)

    small = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return _apply_lighting_and_noise(rng, np.asarray(small, dtype=np.float64))


def _random_frame(rng: np.random.Generator, canvas_size: int) -> _FaceFrame:
    """Draws face position, size and in-plane rotation."""
    scale = canvas_size * rng.uniform(0.36, 0.44)
    offset = rng.uniform(-0.06, 0.06, size=2) * canvas_size
    center = (canvas_size / 2 + offset[0], canvas_size / 2 + offset[1] + 0.03 * canvas_size)
    angle = np.deg2rad(rng.uniform(-12.0, 12.0))
    return _FaceFrame(center=center, scale=scale, angle=float(angle))


def _random_color(rng: np.random.Generator, low: int, high: int) -> tuple[int, int, int]:
    """Draws an RGB colour with channels in [low, high]."""
    return tuple(int(c) for c in rng.integers(low, high + 1, size=3))


def _random_skin(rng: np.random.Generator) -> tuple[int, int, int]:
    """Draws a skin tone between a dark and a light reference."""
    dark, light = np.array([95.0, 60.0, 40.0]), np.array([245.0, 210.0, 180.0])
    tone = dark + rng.uniform(0.1, 1.0) * (light - dark)
    tone += rng.normal(0.0, 8.0, size=3)
    return tuple(int(c) for c in np.clip(tone, 0, 255))


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Scales a colour's brightness."""
    return tuple(int(np.clip(c * factor, 0, 255)) for c in color)


def _draw_head(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    rng: np.random.Generator,
    skin: tuple[int, int, int],
    hair: tuple[int, int, int],
) -> None:
    """Draws neck, optional hair and the face outline."""
    half_width = rng.uniform(0.70, 0.86)
    half_height = rng.uniform(0.92, 1.06)
    draw.polygon(frame.ellipse(0.0, 1.0, 0.38, 0.5), fill=_shade(skin, 0.85))
    if rng.random() < 0.75:
        hair_height = rng.uniform(0.75, 1.0)
        draw.polygon(frame.ellipse(0.0, -0.2, half_width * 1.12, hair_height), fill=hair)
    draw.polygon(frame.ellipse(0.0, 0.0, half_width, half_height), fill=skin)


def _draw_eyes(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    rng: np.random.Generator,
    expression: _Expression,
) -> None:
    """Draws both eyes: sclera, iris, pupil and upper lid line."""
    iris_color = _random_color(rng, low=20, high=140)
    spacing = rng.uniform(0.28, 0.36)
    height_center = rng.uniform(-0.16, -0.08)
    half_width = 0.15
    half_height = 0.085 * float(np.clip(expression.eye_open, 0.15, 2.0))
    iris_radius = 0.065
    for side in (-1.0, 1.0):
        cx = side * spacing
        draw.polygon(
            frame.ellipse(cx, height_center, half_width, half_height),
            fill=(240, 240, 235),
        )
        iris_height = min(iris_radius, half_height)
        draw.polygon(frame.ellipse(cx, height_center, iris_radius, iris_height), fill=iris_color)
        pupil = 0.45 * iris_radius
        draw.polygon(
            frame.ellipse(cx, height_center, pupil, min(pupil, half_height)),
            fill=(15, 15, 15),
        )
        t = np.linspace(np.pi, 2.0 * np.pi, 16)
        lid = frame.points(cx + half_width * np.cos(t), height_center + half_height * np.sin(t))
        draw.line(lid, fill=(30, 25, 25), width=frame.width(0.025))


def _draw_brows(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    expression: _Expression,
    hair: tuple[int, int, int],
) -> None:
    """Draws both eyebrows; raise moves them up, tilt lowers the inner ends."""
    base = -0.34 - 0.12 * expression.brow_raise
    tilt = 0.08 * expression.brow_tilt
    for side in (-1.0, 1.0):
        x = side * np.array([0.10, 0.28, 0.46])
        y = base + np.array([tilt, -0.03 - 0.2 * tilt, -0.5 * tilt])
        draw.line(frame.points(x, y), fill=_shade(hair, 0.8), width=frame.width(0.05))


def _draw_nose(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    expression: _Expression,
    skin: tuple[int, int, int],
) -> None:
    """Draws the nose and, for high ``wrinkle``, bridge wrinkles."""
    line_color = _shade(skin, 0.65)
    draw.line(
        frame.points(np.array([0.0, 0.04, 0.0]), np.array([-0.05, 0.18, 0.22])),
        fill=line_color,
        width=frame.width(0.025),
    )
    t = np.linspace(0.15 * np.pi, 0.85 * np.pi, 10)
    draw.line(
        frame.points(0.09 * np.cos(t), 0.2 + 0.05 * np.sin(t)),
        fill=line_color,
        width=frame.width(0.02),
    )
    num_wrinkles = int(np.clip(round(3 * expression.wrinkle), 0, 3))
    for row in range(num_wrinkles):
        y = -0.1 + 0.05 * row
        for side in (-1.0, 1.0):
            draw.line(
                frame.points(side * np.array([0.05, 0.13]), np.array([y, y - 0.03])),
                fill=_shade(skin, 0.55),
                width=frame.width(0.018),
            )


def _draw_mouth(
    draw: ImageDraw.ImageDraw,
    frame: _FaceFrame,
    expression: _Expression,
    skin: tuple[int, int, int],
) -> None:
    """Draws lips, and the open mouth with optional teeth.

    The mouth is a centre line bent by ``mouth_curve`` and tilted on one side
    by ``asymmetry``; an open mouth spreads upper and lower lips around it.
    """
    half_width = 0.26 * float(np.clip(expression.mouth_width, 0.5, 1.5))
    t = np.linspace(-1.0, 1.0, 25)
    x = half_width * t
    center_line = (
        0.52
        - 0.13 * expression.mouth_curve * t**2
        - 0.05 * expression.asymmetry * np.clip(t, 0.0, 1.0)
    )
    opening = float(np.clip(expression.mouth_open, 0.0, 1.5))
    profile = np.sqrt(1.0 - t**2)
    lip_color = _shade(skin, 0.6)
    if opening < 0.12:
        draw.line(frame.points(x, center_line), fill=lip_color, width=frame.width(0.035))
        return

    upper = center_line - 0.06 * opening * profile
    lower = center_line + 0.16 * opening * profile
    outline = frame.points(np.concatenate([x, x[::-1]]), np.concatenate([upper, lower[::-1]]))
    draw.polygon(outline, fill=(70, 15, 20))
    if expression.teeth > 0.5:
        teeth_bottom = np.minimum(upper + 0.05 * opening + 0.02, lower)
        draw.polygon(
            frame.points(np.concatenate([x, x[::-1]]), np.concatenate([upper, teeth_bottom[::-1]])),
            fill=(235, 235, 225),
        )
    draw.line(outline + outline[:1], fill=lip_color, width=frame.width(0.03))


def _draw_occluder(draw: ImageDraw.ImageDraw, frame: _FaceFrame, rng: np.random.Generator) -> None:
    """Covers part of the face with a bar or a patch of random colour."""
    color = _random_color(rng, low=0, high=255)
    if rng.random() < 0.5:
        top = rng.uniform(-0.5, 0.5)
        x = np.array([-0.95, 0.95, 0.95, -0.95])
        y = np.array([top, top, top + 0.18, top + 0.18])
    else:
        left, top = rng.uniform(-0.8, 0.3), rng.uniform(-0.7, 0.5)
        width, height = rng.uniform(0.25, 0.5, size=2)
        x = np.array([left, left + width, left + width, left])
        y = np.array([top, top, top + height, top + height])
    draw.polygon(frame.points(x, y), fill=color)


def _apply_lighting_and_noise(rng: np.random.Generator, pixels: np.ndarray) -> np.ndarray:
    """Applies a brightness gradient, global exposure and pixel noise."""
    size = pixels.shape[0]
    direction = rng.uniform(0.0, 2.0 * np.pi)
    coords = np.linspace(-1.0, 1.0, size)
    ramp = np.cos(direction) * coords[None, :] + np.sin(direction) * coords[:, None]
    gain = rng.uniform(0.8, 1.15) * (1.0 + rng.uniform(0.0, 0.35) * ramp)
    noisy = pixels * gain[:, :, None] + rng.normal(0.0, rng.uniform(1.0, 6.0), pixels.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
