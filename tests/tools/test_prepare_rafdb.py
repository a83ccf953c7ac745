"""tools/prepare_rafdb.py on small fake RAF-DB releases, and the trainer on its CSVs."""

import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ldl_jax import face_align
from ldl_jax.data import tables
from ldl_jax.va_knn import knn_in_va_space
from tests.helpers.image_checks import distances_to_nearest_blob, draw_dots
from tests.helpers.release_fakes import (
    RAF_BOX,
    RAF_LANDMARKS,
    RAF_TEST,
    RAF_TRAIN,
    knn_of,
    make_raf,
    run_main,
    write_raf_annotations,
)
from tools import make_occluded, prepare_rafdb

ROOT = pathlib.Path(__file__).resolve().parents[2]


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


def test_rafdb_original_photos_come_out_aligned_on_the_template(tmp_path, capsys):
    """Dots at a face's 5 known landmarks in a rotated, scaled photo land within a pixel of
    the template; a face without landmarks is cut out by its box with the margin."""
    raf = make_raf(tmp_path / "basic")
    angle = np.deg2rad(-20.0)
    rotation = 2.5 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = face_align.TEMPLATE_112 @ rotation.T + (120.0, 90.0)
    photo = draw_dots((480, 520), landmarks, radius=6.0)
    original = raf / "Image" / "original" / "train_00001.jpg"
    Image.fromarray(np.dstack([photo] * 3)).save(original, quality=100)
    write_raf_annotations(raf, "train_00001.jpg", landmarks, RAF_BOX)
    square = np.zeros((300, 300, 3), np.uint8)
    square[80:130, 100:150] = 255  # the face box (100, 80)..(150, 130)
    Image.fromarray(square).save(raf / "Image/original/test_0003.jpg", quality=100)
    write_raf_annotations(raf, "test_0003.jpg", None, (100.0, 80.0, 150.0, 130.0))

    args = ["--root", raf, "--out", tmp_path / "out", "--images", "original", "--size", "100"]
    code, out, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 0, err
    images = tmp_path / "out" / "images"
    assert f"image_dir: {images.resolve()}" in out
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert train["subDirectory_filePath"].tolist() == [
        name.replace(".jpg", ".png") for name, _ in RAF_TRAIN
    ]
    assert "aligned on the 5 manual landmarks: 20" in out
    assert "cropped by the bounding box (no manual landmarks): 1" in out
    aligned = np.asarray(Image.open(images / "train_00001.png"))
    assert aligned.shape == (100, 100, 3)
    distances = distances_to_nearest_blob(aligned[..., 0], face_align.template(100))
    np.testing.assert_array_less(distances, 1.0)
    # The 50-pixel box widened by 0.2 of its side each way spans 70 pixels of the 100.
    white = np.argwhere(np.asarray(Image.open(images / "test_0003.png"))[..., 0] > 127)
    assert white.min(0).tolist() in ([14, 14], [15, 15])
    assert white.max(0).tolist() in ([84, 84], [85, 85])


def test_rafdb_originals_need_landmarks_or_a_box_that_parse(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    write_raf_annotations(raf, "train_00004.jpg", None, None)
    args = ["--root", raf, "--out", tmp_path / "out", "--images", "original"]
    code, _, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 2
    assert "train_00004.jpg: neither Annotation/manual/train_00004_manu_attri.txt nor" in err
    manual = raf / "Annotation" / "manual" / "test_0002_manu_attri.txt"
    write_raf_annotations(raf, "train_00004.jpg", RAF_LANDMARKS, RAF_BOX)
    manual.write_text("10\t12\n14 x\n")
    code, _, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 2
    assert "test_0002_manu_attri.txt: 2 lines, expected at least 5" in err
    manual.write_text("10\t12\n14 x\n1 2\n3 4\n5 6\n1\n0\n2\n")
    code, _, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 2
    assert "test_0002_manu_attri.txt:2: '14 x' is not 2 numbers" in err


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


def raf_votes(label: int, seed: int) -> np.ndarray:
    """Seven shares in RAF-DB's order (1 Surprise .. 7 Neutral), most on `label` (1..7)."""
    shares = np.random.default_rng(seed).integers(0, 5, 7).astype(float)
    shares[label - 1] = 30
    return np.round(shares / shares.sum(), 4)


def test_rafdb_crowd_distributions_become_a_column_in_our_class_order(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    entries = RAF_TRAIN + RAF_TEST
    votes = {name: raf_votes(label, seed) for seed, (name, label) in enumerate(entries)}
    votes["test_0002.jpg"] = np.array([0.7, 0.1, 0.0, 0.2, 0.0, 0.0, 0.0])  # its label is 2
    lines = [
        f"{name} " + " ".join(f"{v:.4f}" for v in shares) + " " for name, shares in votes.items()
    ]
    (raf / "EmoLabel" / "distribution_basic.txt").write_text("\n".join(lines) + "\n")
    code, out, err = run_main(prepare_rafdb.main, ["--root", raf, "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "its most voted class is the label on 20 of 21 images" in out
    test = pd.read_csv(tmp_path / "o" / "test.csv")
    # RAF 1 Surprise -> 3, 2 Fear -> 4, 4 Happiness -> 1.
    assert (
        test["distribution"][1] == "0.000000;0.200000;0.000000;0.700000;0.100000;0.000000;0.000000"
    )
    train = pd.read_csv(tmp_path / "o" / "train.csv")
    mapped = np.array([[float(v) for v in text.split(";")] for text in train["distribution"]])
    raf_order = np.array([votes[name] for name, _ in RAF_TRAIN])
    np.testing.assert_allclose(
        mapped[:, [3, 4, 5, 1, 2, 6, 0]], raf_order / raf_order.sum(1, keepdims=True), atol=1e-6
    )
    table = tables.read_eval_table(
        tmp_path / "o" / "test.csv", raf / "Image" / "aligned", num_classes=7
    )
    np.testing.assert_allclose(table.distributions[1], [0, 0.2, 0, 0.7, 0.1, 0, 0])


def test_rafdb_refuses_a_bad_distribution_line_or_a_missing_image(tmp_path, capsys):
    raf = make_raf(tmp_path / "basic")
    names = [name for name, _ in RAF_TRAIN + RAF_TEST]
    path = raf / "EmoLabel" / "distribution_basic.txt"
    lines = [f"{name} 0.5 0.5 0 0 0 0 0" for name in names]
    path.write_text("\n".join([*lines[:3], "train_00004.jpg 0.5 0.5 0 0 0 0", *lines[4:]]) + "\n")
    args = ["--root", raf, "--out", tmp_path / "o"]
    code, _, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 2
    assert "distribution_basic.txt:4: malformed line 'train_00004.jpg 0.5 0.5 0 0 0 0'" in err
    path.write_text("\n".join(lines[:5] + lines[6:]) + "\n")
    code, _, err = run_main(prepare_rafdb.main, args, capsys)
    assert code == 2
    assert "no distribution for 1 of 21 listed images, first: train_00006.jpg" in err
    assert not (tmp_path / "o").exists()


def test_rafdb_va_csv_takes_the_reference_repositorys_published_csv(tmp_path, capsys):
    """The reference publishes RAF-DB's pseudo valence/arousal with its own neighbour lists in
    its training CSV, columns subDirectory_filePath (aligned file names), expression (ldl_jax's
    order), valence, arousal, knn: the VA is taken, the knn recomputed from it."""
    raf = make_raf(tmp_path / "basic")
    rng = np.random.default_rng(1)
    va = rng.uniform(-1, 1, (len(RAF_TRAIN), 2))
    ours = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}
    reference = pd.DataFrame(
        {
            "subDirectory_filePath": [n.replace(".jpg", "_aligned.jpg") for n, _ in RAF_TRAIN],
            "expression": [ours[label] for _, label in RAF_TRAIN],
            "valence": va[:, 0],
            "arousal": va[:, 1],
            "knn": [";".join(str((i + s) % len(RAF_TRAIN)) for s in (1, 2, 3)) for i in range(14)],
        }
    )
    reference.to_csv(tmp_path / "raf_train.csv", index=False)
    args = ["--root", raf, "--out", tmp_path / "o", "--va_csv", tmp_path / "raf_train.csv"]
    code, _, err = run_main(prepare_rafdb.main, [*args, "--num_neighbors", "3"], capsys)
    assert code == 0, err
    train = pd.read_csv(tmp_path / "o" / "train.csv")
    np.testing.assert_allclose(train[["valence", "arousal"]].to_numpy(), va, rtol=1e-12)
    np.testing.assert_array_equal(knn_of(train), knn_in_va_space(va, 3))


# -------------------------------------------------------------------------- the trainer on the CSVs


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
