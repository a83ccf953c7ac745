"""tools/prepare_affectnet.py on small fake AffectNet releases built like the real copies."""

import pathlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ldl_jax.va_knn import knn_in_va_space
from tests.helpers.release_fakes import knn_of, run_main, write_jpeg
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


def make_affectnet_csv(
    root: pathlib.Path,
    train_rows,
    test_rows,
    *,
    headers=(AFFECTNET_HEADER, None),
    image_folder=pathlib.Path("Manually_Annotated_Images"),
) -> pathlib.Path:
    """The manual-annotation release: `headers` are the first lines of training.csv and
    validation.csv (None: no header line, as validation.csv of some copies), the images under
    ROOT/`image_folder`. A row's `box` or `landmarks` may be "NULL", as AffectNet writes them."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    for name, rows, header in (
        ("training.csv", train_rows, headers[0]),
        ("validation.csv", test_rows, headers[1]),
    ):
        lines = [header] if header else []
        for row in rows:
            box = ",".join(["NULL"] * 4 if row["box"] == "NULL" else map(str, row["box"]))
            landmarks = row.get("landmarks", ";".join(["10.5"] * 136))
            lines.append(
                f"{row['path']},{box},{landmarks},{row['expression']},"
                f"{row['valence']},{row['arousal']}"
            )
            image = root / image_folder / row["path"]
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


# ----------------------------------------------------------------------------- real copies' quirks

REAL_HEADER = "#" + AFFECTNET_HEADER  # the header line of the copies in circulation


def test_affectnet_reads_the_hash_header_of_both_lists(tmp_path, capsys):
    train_rows, test_rows = affectnet_rows(30, 0), affectnet_rows(22, 1)
    root = make_affectnet_csv(
        tmp_path / "A", train_rows, test_rows, headers=(REAL_HEADER, REAL_HEADER)
    )
    args = ["--root", root, "--out", tmp_path / "out", "--num_neighbors", "3"]
    code, out, err = run_main(prepare_affectnet.main, args, capsys)
    assert code == 0, err
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    test = pd.read_csv(tmp_path / "out" / "test.csv")
    assert train["subDirectory_filePath"].tolist() == [r["path"] for r in kept(train_rows)]
    assert test["subDirectory_filePath"].tolist() == [r["path"] for r in kept(test_rows)]


def test_affectnet_finds_the_images_one_folder_deeper(tmp_path, capsys):
    deeper = pathlib.Path("Manually_Annotated") / "Manually_Annotated_Images"
    train_rows, test_rows = affectnet_rows(30, 0), affectnet_rows(22, 1)
    root = make_affectnet_csv(
        tmp_path / "A", train_rows, test_rows, headers=(REAL_HEADER, None), image_folder=deeper
    )
    args = ["--root", root, "--out", tmp_path / "out", "--num_neighbors", "3"]
    code, out, err = run_main(prepare_affectnet.main, args, capsys)
    assert code == 0, err
    assert f"image_dir: {(root / deeper).resolve()}" in out
    assert len(pd.read_csv(tmp_path / "out" / "train.csv")) == len(kept(train_rows))


def test_affectnet_takes_an_image_dir_or_says_to_give_one(tmp_path, capsys):
    elsewhere = pathlib.Path("somewhere") / "else"
    root = make_affectnet_csv(
        tmp_path / "A", affectnet_rows(30, 0), affectnet_rows(22, 1), image_folder=elsewhere
    )
    args = ["--root", root, "--out", tmp_path / "out", "--num_neighbors", "3"]
    code, _, err = run_main(prepare_affectnet.main, args, capsys)
    assert code == 2
    assert "pass the image folder as --image_dir" in err and "0/img0_000.jpg" in err
    code, out, err = run_main(
        prepare_affectnet.main, [*args, "--image_dir", root / elsewhere], capsys
    )
    assert code == 0, err
    assert f"image_dir: {(root / elsewhere).resolve()}" in out


def spoil_images(root: pathlib.Path, train_rows) -> dict[str, str]:
    """Replaces four kept training images by bad files, as real copies have them; returns
    path -> the reason expected in skipped.csv."""
    images = root / "Manually_Annotated_Images"
    bad = {
        train_rows[0]["path"]: "empty file",  # the zero-byte image of folder 103
        train_rows[1]["path"]: "not a JPEG/PNG/GIF/BMP image",  # an HTML page
        train_rows[2]["path"]: "not a JPEG/PNG/GIF/BMP image",  # a TIFF
        train_rows[3]["path"]: "cannot decode",  # a truncated JPEG
    }
    (images / train_rows[0]["path"]).write_bytes(b"")
    (images / train_rows[1]["path"]).write_text("<html><body>404</body></html>")
    Image.new("RGB", (32, 36)).save(images / train_rows[2]["path"], format="TIFF")
    truncated = images / train_rows[3]["path"]
    truncated.write_bytes(truncated.read_bytes()[:300])
    return bad


@pytest.mark.parametrize("crop", [False, True])
def test_affectnet_lists_undecodable_images_in_skipped_csv_and_keeps_going(tmp_path, capsys, crop):
    train_rows, test_rows = affectnet_rows(30, 0), affectnet_rows(22, 1)
    root = make_affectnet_csv(tmp_path / "A", train_rows, test_rows)
    bad = spoil_images(root, train_rows)
    args = ["--root", root, "--out", tmp_path / "out", "--num_neighbors", "3"]
    code, out, err = run_main(prepare_affectnet.main, args + ["--crop"] * crop, capsys)
    assert code == 0, err
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    good = [r["path"] for r in kept(train_rows) if r["path"] not in bad]
    assert train["subDirectory_filePath"].tolist() == good
    np.testing.assert_array_equal(
        knn_of(train), knn_in_va_space(train[["valence", "arousal"]].to_numpy(), 3)
    )
    skipped = pd.read_csv(tmp_path / "out" / "skipped.csv")
    assert dict(zip(skipped["subDirectory_filePath"], skipped["reason"], strict=True)) == bad
    assert set(skipped["split"]) == {"train"}
    assert skipped["source"].str.contains("training.csv:").all()
    assert (
        "image missing: 0, empty file: 1, not a JPEG/PNG/GIF/BMP image: 2, cannot decode: 1, "
        "cannot read: 0" in out
    )
    assert "4 images that do not decode are listed in" in out
    if crop:
        images = tmp_path / "out" / "images"
        assert sorted(str(p.relative_to(images)) for p in images.rglob("*.jpg")) == sorted(
            good + [r["path"] for r in kept(test_rows)]
        )


def test_affectnet_drops_rows_whose_face_box_or_landmarks_are_null(tmp_path, capsys):
    train_rows, test_rows = affectnet_rows(30, 0), affectnet_rows(22, 1)
    train_rows[0]["box"] = "NULL"
    train_rows[2]["landmarks"] = "NULL"
    test_rows[1]["box"] = "NULL"
    train_rows[8]["box"] = "NULL"  # label 8: counted with None/Uncertain/No-Face, not twice
    root = make_affectnet_csv(tmp_path / "A", train_rows, test_rows)
    args = ["--root", root, "--out", tmp_path / "out", "--num_neighbors", "3", "--crop"]
    code, out, err = run_main(prepare_affectnet.main, args, capsys)
    assert code == 0, err
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    test = pd.read_csv(tmp_path / "out" / "test.csv")
    nulls = {train_rows[0]["path"], train_rows[2]["path"], test_rows[1]["path"]}
    assert train["subDirectory_filePath"].tolist() == [
        r["path"] for r in kept(train_rows) if r["path"] not in nulls
    ]
    assert test["subDirectory_filePath"].tolist() == [
        r["path"] for r in kept(test_rows) if r["path"] not in nulls
    ]
    train_line = next(line for line in out.splitlines() if line.startswith("dropped from train"))
    assert "None/Uncertain/No-Face (8-10): 6, " in train_line  # labels 8..10 of rows 0..29
    assert "face box/landmarks NULL: 2, " in train_line
    test_line = next(line for line in out.splitlines() if line.startswith("dropped from test"))
    assert "face box/landmarks NULL: 1, " in test_line
