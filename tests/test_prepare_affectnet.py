"""tools/prepare_affectnet.py on small fake AffectNet releases built like the real copies."""

import pathlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ldl_jax.va_knn import knn_in_va_space
from tests.release_fakes import knn_of, run_main, write_jpeg
from tools import prepare_affectnet


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
