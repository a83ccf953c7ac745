"""Release converters (RAF-DB, AffectNet) and occluded test sets, on small fake releases."""

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ldl_jax.va_knn import knn_in_va_space
from tools import make_occluded, prepare_affectnet, prepare_rafdb
from tools.release_common import progress

ROOT = pathlib.Path(__file__).resolve().parents[1]
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


# ----------------------------------------------------------------------------- RAF-DB

# Two training images per RAF-DB label 1..7 and one test image per label.
RAF_TRAIN = [(f"train_{i + 1:05d}.jpg", i % 7 + 1) for i in range(14)]
RAF_TEST = [(f"test_{i + 1:04d}.jpg", i % 7 + 1) for i in range(7)]


def make_raf(root: pathlib.Path, lines=None) -> pathlib.Path:
    """A fake RAF/basic: the label file (as `lines` if given) and every listed image."""
    entries = RAF_TRAIN + RAF_TEST
    (root / RAF_LABELS).parent.mkdir(parents=True)
    text = lines if lines is not None else [f"{name} {label}" for name, label in entries]
    (root / RAF_LABELS).write_text("\n".join(text) + "\n")
    for seed, (name, _) in enumerate(entries):
        stem = name.removesuffix(".jpg")
        write_jpeg(root / "Image" / "aligned" / f"{stem}_aligned.jpg", seed)
        write_jpeg(root / "Image" / "original" / name, seed, size=(40, 30))
    return root


def test_rafdb_labels_become_ours_and_paths_are_relative(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    code, out, _ = run_main(prepare_rafdb.main, ["--root", raf, "--out", tmp_path / "out"], capsys)
    assert code == 0
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    test = pd.read_csv(tmp_path / "out" / "test.csv")
    assert list(train.columns) == list(test.columns) == ["subDirectory_filePath", "expression"]
    # RAF 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral.
    expected = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}
    assert train["expression"].tolist() == [expected[label] for _, label in RAF_TRAIN]
    assert test["expression"].tolist() == [expected[label] for _, label in RAF_TEST]
    assert train["subDirectory_filePath"][0] == "train_00001_aligned.jpg"
    assert test["subDirectory_filePath"][6] == "test_0007_aligned.jpg"
    image_dir = raf / "Image" / "aligned"
    assert all((image_dir / name).is_file() for name in train["subDirectory_filePath"])
    assert f"image_dir: {image_dir.resolve()}" in out
    assert "3 Surprise" in out and "total" in out
    surprise_row = next(line for line in out.splitlines() if line.startswith("3 Surprise"))
    assert surprise_row.split()[2:] == ["2", "1"]  # train, test


def test_rafdb_original_images_keep_their_names(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    args = ["--root", raf, "--out", tmp_path / "out", "--images", "original"]
    assert run_main(prepare_rafdb.main, args, capsys)[0] == 0
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert train["subDirectory_filePath"].tolist() == [name for name, _ in RAF_TRAIN]


def test_rafdb_va_source_adds_valence_arousal_and_the_knn_column(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    rng = np.random.default_rng(0)
    va = np.round(rng.uniform(-1, 1, (len(RAF_TRAIN), 2)), 3)
    # VA rows in another order, keyed by the label file's names, plus test rows (ignored).
    order = rng.permutation(len(RAF_TRAIN))
    source = pd.DataFrame(
        {
            "name": [RAF_TRAIN[i][0] for i in order] + ["test_0001.jpg"],
            "valence": list(va[order, 0]) + [0.0],
            "arousal": list(va[order, 1]) + [0.0],
        }
    )
    source.to_csv(tmp_path / "va.csv", index=False)
    args = ["--root", raf, "--out", tmp_path / "out", "--va_csv", tmp_path / "va.csv"]
    assert run_main(prepare_rafdb.main, [*args, "--num_neighbors", "5"], capsys)[0] == 0
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert list(train.columns) == [
        "subDirectory_filePath",
        "expression",
        "valence",
        "arousal",
        "knn",
    ]
    np.testing.assert_allclose(train[["valence", "arousal"]].to_numpy(), va)
    np.testing.assert_array_equal(knn_of(train), knn_in_va_space(va, 5))
    assert list(pd.read_csv(tmp_path / "out" / "test.csv").columns) == [
        "subDirectory_filePath",
        "expression",
    ]


BAD_RAF_LINES = {
    "one field": ("train_00003.jpg", "malformed line"),
    "three fields": ("train_00003.jpg 3 1", "malformed line"),
    "label not an integer": ("train_00003.jpg three", "the label is not an integer"),
    "bad image name": ("val_00003.jpg 3", "is not train_<number>.jpg"),
    "unknown label": ("train_00003.jpg 8", "unknown label 8"),
    "listed twice": ("train_00001.jpg 3", "train_00001.jpg is listed twice (first at line 1)"),
}


@pytest.mark.parametrize("case", sorted(BAD_RAF_LINES))
def test_rafdb_refuses_a_bad_label_line_naming_it(tmp_path, capsys, case):
    bad_line, message = BAD_RAF_LINES[case]
    lines = [f"{name} {label}" for name, label in RAF_TRAIN + RAF_TEST]
    lines[2] = bad_line
    raf = make_raf(tmp_path / "basic", lines)
    code, _, err = run_main(prepare_rafdb.main, ["--root", raf, "--out", tmp_path / "o"], capsys)
    assert code == 2
    assert "list_patition_label.txt:3: " in err
    assert message in err
    assert not (tmp_path / "o").exists()


def test_rafdb_refuses_a_missing_image_naming_its_line(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    (raf / "Image" / "aligned" / "test_0002_aligned.jpg").unlink()
    code, _, err = run_main(prepare_rafdb.main, ["--root", raf, "--out", tmp_path / "o"], capsys)
    assert code == 2
    assert "list_patition_label.txt:16: listed image is missing (1 of 21" in err
    assert "test_0002_aligned.jpg" in err
    assert not (tmp_path / "o").exists()


def test_rafdb_refuses_a_va_source_without_every_training_image(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    pd.DataFrame(
        {"subDirectory_filePath": ["train_00001_aligned.jpg"], "valence": [0.1], "arousal": [0]}
    ).to_csv(tmp_path / "va.csv", index=False)
    args = ["--root", raf, "--out", tmp_path / "o", "--va_csv", tmp_path / "va.csv"]
    code, _, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 2
    assert "no valence/arousal for 13 of 14 training images, first: train_00002_aligned.jpg" in err


def test_rafdb_refuses_a_bad_va_row_naming_its_line(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    (tmp_path / "va.csv").write_text("name,valence,arousal\ntrain_00001.jpg,0.1,0.2\nx.jpg,?,0\n")
    args = ["--root", raf, "--out", tmp_path / "o", "--va_csv", tmp_path / "va.csv"]
    code, _, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 2
    assert "va.csv:3: valence/arousal ('?', '0')" in err


def test_rafdb_cli_help_and_an_error_from_a_subprocess(tmp_path):
    script = str(ROOT / "tools" / "prepare_rafdb.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert shown.returncode == 0
    assert "--va_csv" in shown.stdout and "3, 4, 5, 1, 2, 6, 0" in shown.stdout
    lines = [f"{name} {label}" for name, label in RAF_TRAIN + RAF_TEST]
    lines[4] = "train_00005.jpg 0"
    raf = make_raf(tmp_path / "basic", lines)
    failed = subprocess.run(
        [sys.executable, script, "--root", str(raf), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    assert "list_patition_label.txt:5: unknown label 0 for train_00005.jpg" in failed.stderr


# ----------------------------------------------------------------------------- AffectNet

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    "expression,valence,arousal"
)


def affectnet_rows(count: int, seed: int) -> list[dict]:
    """Rows cycling through labels 0..10; every 5th row of a valid class has VA -2."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        label = i % 11
        valence, arousal = np.round(rng.uniform(-1, 1, 2), 4)
        if label >= 8 or i % 5 == 4:
            valence = arousal = -2
        rows.append(
            {
                "path": f"{i % 3}/img{seed}_{i:03d}.jpg",
                "box": (4, 6, 20, 24),
                "expression": label,
                "valence": valence,
                "arousal": arousal,
            }
        )
    return rows


def make_affectnet_csv(root: pathlib.Path, train_rows, test_rows) -> pathlib.Path:
    """The manual-annotation release; validation.csv without its header, as some copies."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    for name, rows, header in (
        ("training.csv", train_rows, True),
        ("validation.csv", test_rows, False),
    ):
        lines = [AFFECTNET_HEADER] if header else []
        for row in rows:
            x, y, w, h = row["box"]
            landmarks = '"' + ";".join(["10.5"] * 136) + '"'
            lines.append(
                f"{row['path']},{x},{y},{w},{h},{landmarks},{row['expression']},"
                f"{row['valence']},{row['arousal']}"
            )
            image = root / "Manually_Annotated_Images" / row["path"]
            write_jpeg(image, len(lines), (32, 36))
        (lists / name).write_text("\n".join(lines) + "\n")
    return root


def kept(rows, classes=7):
    return [r for r in rows if r["expression"] < classes and r["valence"] != -2]


def test_affectnet_csv_release_drops_unusable_rows_and_writes_knn(tmp_path, capsys):
    train_rows, test_rows = affectnet_rows(60, 0), affectnet_rows(22, 1)
    root = make_affectnet_csv(tmp_path / "AffectNet", train_rows, test_rows)
    args = ["--root", root, "--out", tmp_path / "out", "--num_neighbors", "4"]
    code, out, _ = run_main(prepare_affectnet.main, args, capsys)
    assert code == 0
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    test = pd.read_csv(tmp_path / "out" / "test.csv")
    expected = kept(train_rows)
    assert train["subDirectory_filePath"].tolist() == [r["path"] for r in expected]
    assert train["expression"].tolist() == [r["expression"] for r in expected]
    assert set(train["expression"]) == set(range(7))
    assert (train[["valence", "arousal"]].to_numpy() != -2).all()
    va = train[["valence", "arousal"]].to_numpy()
    np.testing.assert_array_equal(knn_of(train), knn_in_va_space(va, 4))
    assert test["subDirectory_filePath"].tolist() == [r["path"] for r in kept(test_rows)]
    assert "knn" not in test.columns
    # 60 rows: labels 8..10 on 15 rows, Contempt (7) on 5, VA -2 on 8 of the other 40.
    assert "dropped from train: None/Uncertain/No-Face (8-10): 15, Contempt (7): 5, " in out
    assert "valence/arousal -2: 8" in out
    assert len(train) == 32
    assert f"image_dir: {(root / 'Manually_Annotated_Images').resolve()}" in out


def test_affectnet_eight_classes_keep_contempt(tmp_path, capsys):
    train_rows, test_rows = affectnet_rows(60, 0), affectnet_rows(22, 1)
    root = make_affectnet_csv(tmp_path / "AffectNet", train_rows, test_rows)
    args = ["--root", root, "--out", tmp_path / "out", "--classes", "8", "--num_neighbors", "4"]
    code, out, _ = run_main(prepare_affectnet.main, args, capsys)
    assert code == 0
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert train["expression"].tolist() == [r["expression"] for r in kept(train_rows, 8)]
    assert 7 in set(train["expression"]) and "7 Contempt" in out


def test_affectnet_crop_writes_the_face_boxes(tmp_path, capsys):
    train_rows, test_rows = affectnet_rows(24, 0), affectnet_rows(11, 1)
    train_rows[0]["box"] = (20, 30, 40, 40)  # past the 32x36 image: clipped to 12x6
    root = make_affectnet_csv(tmp_path / "AffectNet", train_rows, test_rows)
    args = ["--root", root, "--out", tmp_path / "out", "--crop", "--num_neighbors", "3"]
    code, out, _ = run_main(prepare_affectnet.main, args, capsys)
    assert code == 0
    images = tmp_path / "out" / "images"
    assert f"image_dir: {images.resolve()}" in out
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    sizes = [Image.open(images / path).size for path in train["subDirectory_filePath"]]
    assert sizes[0] == (12, 6)
    assert set(sizes[1:]) == {(20, 24)}
    assert len(list(images.rglob("*.jpg"))) == len(train) + len(kept(test_rows))
    original = np.asarray(Image.open(root / "Manually_Annotated_Images" / train_rows[1]["path"]))
    face = np.asarray(Image.open(images / train_rows[1]["path"])).astype(int)
    assert np.abs(face - original[6:30, 4:24]).mean() < 20  # the box, up to JPEG noise


BAD_AFFECTNET_ROWS = {
    "expression not an integer": ({"expression": "happy"}, "expression 'happy' is not an integer"),
    "expression out of range": ({"expression": 11}, "expression 11 is outside 0..10"),
    "valence not a number": ({"valence": "n/a"}, "valence 'n/a' is not a number"),
    "arousal out of range": ({"arousal": 1.5}, "arousal 1.5 is outside [-1, 1]"),
}


@pytest.mark.parametrize("case", sorted(BAD_AFFECTNET_ROWS))
def test_affectnet_refuses_a_bad_row_naming_its_line(tmp_path, capsys, case):
    change, message = BAD_AFFECTNET_ROWS[case]
    train_rows = affectnet_rows(20, 0)
    train_rows[6].update(change)
    root = make_affectnet_csv(tmp_path / "AffectNet", train_rows, affectnet_rows(11, 1))
    code, _, err = run_main(
        prepare_affectnet.main, ["--root", root, "--out", tmp_path / "o"], capsys
    )
    assert code == 2
    assert f"training.csv:8: {message}" in err  # header on line 1, row 6 on line 8
    assert not (tmp_path / "o").exists()


def test_affectnet_refuses_a_short_row_and_a_missing_image(tmp_path, capsys):
    root = make_affectnet_csv(tmp_path / "A", affectnet_rows(20, 0), affectnet_rows(11, 1))
    validation = root / "Manually_Annotated_file_lists" / "validation.csv"
    lines = validation.read_text().splitlines()
    validation.write_text("\n".join([*lines[:3], "1/x.jpg,1,2,3", *lines[3:]]) + "\n")
    code, _, err = run_main(
        prepare_affectnet.main, ["--root", root, "--out", tmp_path / "o"], capsys
    )
    assert code == 2
    assert "validation.csv:4: malformed row: 4 fields, the header has 9" in err

    root = make_affectnet_csv(tmp_path / "B", affectnet_rows(20, 0), affectnet_rows(11, 1))
    (root / "Manually_Annotated_Images" / "1/img0_001.jpg").unlink()
    args = ["--root", root, "--out", tmp_path / "o", "--num_neighbors", "3"]
    code, _, err = run_main(prepare_affectnet.main, args, capsys)
    assert code == 2
    assert "training.csv:3: image is missing (1 of" in err
    code, out, _ = run_main(prepare_affectnet.main, [*args, "--skip_missing"], capsys)
    assert code == 0 and "image missing: 1" in out
    assert (
        "1/img0_001.jpg"
        not in pd.read_csv(tmp_path / "o" / "train.csv")["subDirectory_filePath"].tolist()
    )


def make_affectnet_npy(root: pathlib.Path, labels_by_split: dict) -> pathlib.Path:
    """The per-image release; annotations stored as strings, as released."""
    rng = np.random.default_rng(0)
    for folder, labels in labels_by_split.items():
        for image_id, label in enumerate(labels):
            write_jpeg(root / folder / "images" / f"{image_id}.jpg", image_id, (16, 16))
            annotations = root / folder / "annotations"
            annotations.mkdir(parents=True, exist_ok=True)
            valence, arousal = (-2.0, -2.0) if image_id == 3 else np.round(rng.uniform(-1, 1, 2), 5)
            np.save(annotations / f"{image_id}_exp.npy", np.array(str(label)))
            np.save(annotations / f"{image_id}_val.npy", np.array(str(valence)))
            np.save(annotations / f"{image_id}_aro.npy", np.array(str(arousal)))
            np.save(annotations / f"{image_id}_lnd.npy", np.zeros(136))
    return root


def test_affectnet_npy_release(tmp_path, capsys):
    train_labels = [i % 8 for i in range(12)]  # ids 10, 11 sort after 9, not after 1
    root = make_affectnet_npy(
        tmp_path / "AffectNet", {"train_set": train_labels, "val_set": [0, 1, 2, 7, 6]}
    )
    args = ["--root", root, "--out", tmp_path / "out", "--num_neighbors", "3"]
    code, out, _ = run_main(prepare_affectnet.main, args, capsys)
    assert code == 0 and "layout: npy" in out
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    ids = [i for i in range(12) if train_labels[i] != 7 and i != 3]  # Contempt; VA -2 at id 3
    assert train["subDirectory_filePath"].tolist() == [f"train_set/images/{i}.jpg" for i in ids]
    assert train["expression"].tolist() == [train_labels[i] for i in ids]
    assert train["valence"].between(-1, 1).all()
    np.testing.assert_array_equal(
        knn_of(train), knn_in_va_space(train[["valence", "arousal"]].to_numpy(), 3)
    )
    test = pd.read_csv(tmp_path / "out" / "test.csv")
    assert test["subDirectory_filePath"].tolist() == [
        "val_set/images/0.jpg",
        "val_set/images/1.jpg",
        "val_set/images/2.jpg",
        "val_set/images/4.jpg",
    ]


def test_affectnet_npy_release_names_a_missing_annotation(tmp_path, capsys):
    root = make_affectnet_npy(tmp_path / "A", {"train_set": [0, 1, 2, 3, 4], "val_set": [0, 1]})
    (root / "train_set" / "annotations" / "2_aro.npy").unlink()
    code, _, err = run_main(
        prepare_affectnet.main, ["--root", root, "--out", tmp_path / "o"], capsys
    )
    assert code == 2
    assert "2_aro.npy: annotation file is missing" in err


# ----------------------------------------------------------------------------- occlusion


def make_test_set(root: pathlib.Path, count: int = 6, size=(64, 64)) -> pathlib.Path:
    for i in range(count):
        write_jpeg(root / "images" / "sub" / f"face_{i}.jpg", i, size)
    pd.DataFrame(
        {
            "subDirectory_filePath": [f"sub/face_{i}.jpg" for i in range(count)],
            "expression": [i % 7 for i in range(count)],
            "note": [f"n{i}" for i in range(count)],
        }
    ).to_csv(root / "test.csv", index=False)
    return root


def occlude_set(data, out, kind, capsys, *extra):
    args = ["--csv", data / "test.csv", "--image_dir", data / "images", "--out", out]
    code, stdout, err = run_main(make_occluded.main, [*args, "--kind", kind, *extra], capsys)
    assert code == 0, err
    return stdout


@pytest.mark.parametrize("kind", make_occluded.KINDS)
def test_occlusion_changes_only_the_occluded_region(tmp_path, capsys, kind):
    data = make_test_set(tmp_path / "data")
    out = occlude_set(data, tmp_path / kind, kind, capsys, "--seed", "3")
    assert '"image_dir": "' in out
    frame = pd.read_csv(tmp_path / kind / "test.csv")
    assert frame["subDirectory_filePath"].tolist() == [f"sub/face_{i}.png" for i in range(6)]
    assert frame["note"].tolist() == [f"n{i}" for i in range(6)]
    for row in range(6):
        original = np.asarray(Image.open(data / "images" / f"sub/face_{row}.jpg"))
        occluded = np.asarray(Image.open(tmp_path / kind / "images" / f"sub/face_{row}.png"))
        region = make_occluded.occlusion_region(kind, 64, 64, make_occluded.image_rng(3, row))
        assert region.any()
        np.testing.assert_array_equal(occluded[~region], original[~region])
        assert (occluded[region] == make_occluded.DEFAULT_COLORS[kind]).all()
    assert (tmp_path / kind / "examples.png").read_bytes().startswith(b"\x89PNG")


def test_occlusion_is_deterministic_per_seed(tmp_path, capsys):
    data = make_test_set(tmp_path / "data")
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        occlude_set(data, tmp_path / name, "patch", capsys, "--seed", seed, "--workers", "2")

    def pixels(name):
        return [
            np.asarray(Image.open(tmp_path / name / "images" / f"sub/face_{i}.png"))
            for i in range(6)
        ]

    assert all(np.array_equal(x, y) for x, y in zip(pixels("a"), pixels("b"), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(pixels("a"), pixels("c"), strict=True))


def test_mask_covers_the_lower_face_under_a_curved_edge_and_the_bar_the_eyes():
    rng = np.random.default_rng(0)
    mask = make_occluded.occlusion_region("mask", 100, 100, rng)
    rows = np.flatnonzero(mask.any(axis=1))
    assert 55 <= rows.min() <= 66 and rows.max() >= 97  # below the nose down to the chin
    assert mask[80, 50] and mask[75, 25] and mask[75, 75]  # mouth and cheeks
    assert not mask[:55].any()  # eyes and nose tip free
    top_edge = mask.argmax(axis=0)
    assert top_edge[50] < top_edge[20] and top_edge[50] < top_edge[80]  # curved upper edge
    eyes = make_occluded.occlusion_region("eyes", 100, 100, rng)
    rows = np.flatnonzero(eyes.any(axis=1))
    assert rows.min() >= 25 and rows.max() <= 55
    assert eyes[40, 30] and eyes[40, 70] and not eyes[80].any()


@pytest.mark.parametrize("area", [0.1, 0.25, 0.5])
def test_patches_cover_the_requested_area_fraction(area):
    fractions = [
        make_occluded.occlusion_region(
            "patch", 96, 80, make_occluded.image_rng(seed, 0), area
        ).mean()
        for seed in range(10)
    ]
    assert min(fractions) >= area - 0.006 and max(fractions) <= area


def test_occlusion_names_the_line_of_a_missing_image(tmp_path, capsys):
    data = make_test_set(tmp_path / "data")
    (data / "images" / "sub" / "face_4.jpg").unlink()
    args = ["--csv", data / "test.csv", "--image_dir", data / "images", "--out", tmp_path / "o"]
    code, _, err = run_main(make_occluded.main, [*args, "--kind", "eyes"], capsys)
    assert code == 2
    assert "test.csv:6: image" in err and "face_4.jpg is missing" in err


# ----------------------------------------------------------------------------- the trainer


def test_the_trainer_accepts_the_written_csvs(tmp_path, capsys):
    from ldl_jax.data import tables

    raf = make_raf(tmp_path / "basic")
    va = pd.DataFrame(
        {
            "name": [name for name, _ in RAF_TRAIN],
            "valence": np.linspace(-1, 1, len(RAF_TRAIN)),
            "arousal": np.linspace(1, -0.5, len(RAF_TRAIN)) ** 2,
        }
    )
    va.to_csv(tmp_path / "va.csv", index=False)
    out = tmp_path / "raf"
    args = ["--root", raf, "--out", out, "--va_csv", tmp_path / "va.csv", "--num_neighbors", "4"]
    assert run_main(prepare_rafdb.main, args, capsys)[0] == 0
    image_dir = raf / "Image" / "aligned"
    table = tables.read_train_table(out / "train.csv", image_dir, num_classes=7, num_neighbors=4)
    assert table.num_rows == 14
    tables.read_eval_table(out / "test.csv", image_dir, num_classes=7)
    occlusion_args = ["--csv", out / "test.csv", "--image_dir", image_dir, "--out", tmp_path / "m"]
    assert run_main(make_occluded.main, [*occlusion_args, "--kind", "mask"], capsys)[0] == 0
    occluded = tables.read_eval_table(
        tmp_path / "m" / "test.csv", tmp_path / "m" / "images", num_classes=7
    )
    assert len(occluded.labels) == 7


def test_progress_reports_every_tenth_of_a_long_job_only(capsys):
    assert list(progress(range(2000), 2000, "decoding")) == list(range(2000))
    assert capsys.readouterr().err.splitlines() == [
        f"decoding: {200 * i}/2000" for i in range(1, 11)
    ]
    assert list(progress(range(20), 20, "decoding")) == list(range(20))
    assert capsys.readouterr().err == ""
