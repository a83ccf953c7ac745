"""Small fake data releases and a way to run a tool's main() (shared by the release tool tests)."""

import pathlib

import numpy as np
import pandas as pd
from PIL import Image

RAF_LABELS = pathlib.Path("EmoLabel") / "list_patition_label.txt"


def write_jpeg(path: pathlib.Path, seed: int, size=(24, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def knn_of(frame: pd.DataFrame) -> np.ndarray:
    return np.array([[int(i) for i in row.split(";")] for row in frame["knn"]])


def run_main(main, argv, capsys) -> tuple[int, str, str]:
    """Runs a tool's main(argv); returns (exit code, stdout, stderr)."""
    try:
        main([str(arg) for arg in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# Two training images per RAF-DB label 1..7 and one test image per label.
RAF_TRAIN = [(f"train_{i + 1:05d}.jpg", i % 7 + 1) for i in range(14)]
RAF_TEST = [(f"test_{i + 1:04d}.jpg", i % 7 + 1) for i in range(7)]


# Five landmarks (eyes, nose tip, mouth corners) and a face box inside the 40x30 fake originals.
RAF_LANDMARKS = np.array([[14.0, 10.0], [26.0, 10.0], [20.0, 15.0], [15.0, 21.0], [25.0, 21.0]])
RAF_BOX = (8.0, 3.0, 32.0, 27.0)


def write_raf_annotations(root: pathlib.Path, name: str, landmarks, box) -> None:
    """The release's manual landmarks (5 `x<TAB>y` lines, then gender, race, age) and face
    box (`x_min y_min x_max y_max`) of one image; None leaves that file out."""
    stem = name.removesuffix(".jpg")
    manual = root / "Annotation" / "manual" / f"{stem}_manu_attri.txt"
    boxes = root / "Annotation" / "boundingbox" / f"{stem}_boundingbox.txt"
    for folder in (manual.parent, boxes.parent):
        folder.mkdir(parents=True, exist_ok=True)
    manual.unlink(missing_ok=True)
    if landmarks is not None:
        manual.write_text("".join(f"{x:.2f}\t{y:.2f}\n" for x, y in landmarks) + "1\n0\n2\n")
    boxes.unlink(missing_ok=True)
    if box is not None:
        boxes.write_text(" ".join(f"{value:.1f}" for value in box) + "\n")


def make_raf(root: pathlib.Path, lines=None) -> pathlib.Path:
    """A fake RAF/basic: the label file (as `lines` if given), every listed image (aligned and
    original) and the originals' annotations."""
    entries = RAF_TRAIN + RAF_TEST
    (root / RAF_LABELS).parent.mkdir(parents=True)
    text = lines if lines is not None else [f"{name} {label}" for name, label in entries]
    (root / RAF_LABELS).write_text("\n".join(text) + "\n")
    for seed, (name, _) in enumerate(entries):
        stem = name.removesuffix(".jpg")
        write_jpeg(root / "Image" / "aligned" / f"{stem}_aligned.jpg", seed)
        write_jpeg(root / "Image" / "original" / name, seed, size=(40, 30))
        write_raf_annotations(root, name, RAF_LANDMARKS, RAF_BOX)
    return root
