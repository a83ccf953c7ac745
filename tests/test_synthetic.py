"""Tests of the synthetic FER generator (the VA nearest-neighbour search is in test_va_knn.py)."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldl_jax.synthetic import CLASS_NAMES, make_synthetic_fer
from tests.test_va_knn import brute_force_knn

REPO_ROOT = Path(__file__).resolve().parents[1]
SMALL = {"num_train": 60, "num_test": 21, "num_val": 14, "image_size": 32, "num_neighbors": 8}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("synthetic") / "fer"
    make_synthetic_fer(out_dir, seed=3, **SMALL)
    return out_dir


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames), list(reader)


def read_images(out_dir: Path, rows: list[dict[str, str]]) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(out_dir / "images" / row["subDirectory_filePath"])) for row in rows
    ]


def test_layout_and_summary(tmp_path: Path) -> None:
    out_dir = tmp_path / "fer"
    summary = make_synthetic_fer(out_dir, seed=0, **SMALL)

    assert summary["counts"] == {"train": 60, "test": 21, "val": 14}
    assert summary["csv"]["train"] == str(out_dir / "train.csv")
    assert summary["image_dir"] == str(out_dir / "images")
    for split, size in summary["counts"].items():
        assert sum(summary["class_counts"][split]) == size
        assert len(list((out_dir / "images" / split).iterdir())) == size
    # Only the finished dataset is left next to it: no staging folder.
    assert [path.name for path in tmp_path.iterdir()] == ["fer"]


def test_no_val_split_by_default(tmp_path: Path) -> None:
    summary = make_synthetic_fer(
        tmp_path / "fer", num_train=20, num_test=7, image_size=16, num_neighbors=4
    )

    assert set(summary["counts"]) == {"train", "test"}
    assert not (tmp_path / "fer" / "val.csv").exists()
    assert not (tmp_path / "fer" / "images" / "val").exists()


def test_same_seed_gives_identical_dataset(dataset: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    make_synthetic_fer(again, seed=3, **SMALL)

    for split in ("train", "test", "val"):
        assert (again / f"{split}.csv").read_bytes() == (dataset / f"{split}.csv").read_bytes()
        _, rows = read_rows(dataset / f"{split}.csv")
        for first, second in zip(read_images(dataset, rows), read_images(again, rows), strict=True):
            np.testing.assert_array_equal(first, second)


def test_different_seeds_differ(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    make_synthetic_fer(other, seed=4, **SMALL)

    assert (other / "train.csv").read_bytes() != (dataset / "train.csv").read_bytes()
    _, rows = read_rows(dataset / "train.csv")
    first = np.stack(read_images(dataset, rows))
    second = np.stack(read_images(other, rows))
    assert not np.array_equal(first, second)


def test_training_csv_columns_and_values(dataset: Path) -> None:
    columns, rows = read_rows(dataset / "train.csv")

    assert columns == [
        "subDirectory_filePath",
        "expression",
        "valence",
        "arousal",
        "knn",
        "distribution",
    ]
    assert [row["subDirectory_filePath"] for row in rows] == [
        f"train/{index:05d}.jpg" for index in range(len(rows))
    ]
    for row in rows:
        assert 0 <= int(row["expression"]) < len(CLASS_NAMES)
        for name in ("valence", "arousal"):
            whole, decimals = row[name].lstrip("-").split(".")
            assert len(decimals) == 4 and whole.isdigit()
            assert -1.0 <= float(row[name]) <= 1.0


@pytest.mark.parametrize("split", ["test", "val"])
def test_evaluation_csv_columns(dataset: Path, split: str) -> None:
    columns, rows = read_rows(dataset / f"{split}.csv")

    assert columns == ["subDirectory_filePath", "expression", "valence", "arousal", "distribution"]
    assert rows[0]["subDirectory_filePath"] == f"{split}/00000.jpg"
    assert len(rows) == SMALL[f"num_{split}"]


def test_knn_column_is_exact_l1_ranking_of_written_values(dataset: Path) -> None:
    _, rows = read_rows(dataset / "train.csv")
    va = np.array([[float(row["valence"]), float(row["arousal"])] for row in rows])
    knn = np.array([[int(index) for index in row["knn"].split(";")] for row in rows])

    assert knn.shape == (SMALL["num_train"], SMALL["num_neighbors"])
    assert knn.min() >= 0 and knn.max() < len(rows)
    assert not np.any(knn == np.arange(len(rows))[:, None])
    np.testing.assert_array_equal(knn, brute_force_knn(va, SMALL["num_neighbors"]))


# SHA-256 of a tiny set (seed 0: 5 train, 2 test, 2 val images at 16 px, 2 neighbours) as the
# generator wrote it before the distribution column: its images and other columns must not move.
TINY = {"num_train": 5, "num_test": 2, "num_val": 2, "image_size": 16, "num_neighbors": 2}
TINY_DIGESTS = {
    "images": "2ae5a99a69de58db323916e6d49a827b7ada1afdd92241885b982cdb69143225",
    "train": "56f28a7f046684983f8dfcc492792cc0a6a1e1d3f868529fb7db3b5704ed09ef",
    "test": "851e5a9315b4a4dc70a9569c222d0c895a85db367f07694f91368a1056ddabae",
    "val": "398854fe1b9df3d9cc86de147b9632abe81b744c1ec8f34d40fa3ecda96e4d5a",
}


def test_the_distribution_column_leaves_images_and_other_columns_as_they_were(tmp_path):
    make_synthetic_fer(tmp_path / "s", seed=0, **TINY)
    images = hashlib.sha256()
    for path in sorted((tmp_path / "s" / "images").rglob("*.jpg")):
        images.update(path.read_bytes())
    digests = {"images": images.hexdigest()}
    for split in ("train", "test", "val"):
        lines = (tmp_path / "s" / f"{split}.csv").read_text().splitlines(keepends=True)
        assert lines[0].rstrip("\n").endswith(",distribution")
        without = "".join(line.rsplit(",", 1)[0] + "\n" for line in lines)
        digests[split] = hashlib.sha256(without.encode()).hexdigest()
    assert digests == TINY_DIGESTS


@pytest.mark.parametrize("split", ["train", "test", "val"])
def test_crowd_distributions_favour_the_label_and_its_va_neighbours(dataset: Path, split: str):
    _, rows = read_rows(dataset / f"{split}.csv")
    votes = np.array([[float(v) for v in row["distribution"].split(";")] for row in rows])
    labels = np.array([int(row["expression"]) for row in rows])
    np.testing.assert_allclose(votes.sum(axis=1), 1.0, atol=1e-5)
    assert (votes.argmax(axis=1) == labels).all()
    # Happy (1) and Surprise (3) sit closer in VA space than Happy and Sad (2).
    happy = votes[labels == 1]
    assert (happy[:, 3] > happy[:, 2]).all()


@pytest.mark.parametrize("split", ["train", "test", "val"])
def test_every_class_appears(dataset: Path, split: str) -> None:
    _, rows = read_rows(dataset / f"{split}.csv")

    assert {int(row["expression"]) for row in rows} == set(range(len(CLASS_NAMES)))


def test_images_decode_to_requested_size(dataset: Path) -> None:
    for split in ("train", "test", "val"):
        _, rows = read_rows(dataset / f"{split}.csv")
        for image in read_images(dataset, rows):
            assert image.shape == (SMALL["image_size"], SMALL["image_size"], 3)
            assert image.dtype == np.uint8


def test_refuses_non_empty_output_folder(tmp_path: Path) -> None:
    out_dir = tmp_path / "fer"
    out_dir.mkdir()
    (out_dir / "old.txt").write_text("keep me")

    with pytest.raises(ValueError, match="not empty"):
        make_synthetic_fer(out_dir, **SMALL)
    assert [path.name for path in out_dir.iterdir()] == ["old.txt"]


def test_fills_an_existing_empty_folder(tmp_path: Path) -> None:
    out_dir = tmp_path / "fer"
    out_dir.mkdir()

    make_synthetic_fer(out_dir, num_train=20, num_test=7, image_size=16, num_neighbors=4)
    assert (out_dir / "train.csv").is_file()


@pytest.mark.parametrize(
    "arguments",
    [
        {"num_train": 8, "num_neighbors": 8},
        {"num_neighbors": 0},
        {"num_test": 0},
        {"num_val": -1},
        {"image_size": 8},
        {"seed": -1},
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, arguments: dict) -> None:
    with pytest.raises(ValueError):
        make_synthetic_fer(tmp_path / "fer", **{**SMALL, **arguments})
    assert not any(tmp_path.iterdir())


def test_command_line_tool(tmp_path: Path) -> None:
    out_dir = tmp_path / "fer"
    command = [
        sys.executable,
        str(REPO_ROOT / "tools" / "make_synthetic_fer.py"),
        *("--out", str(out_dir), "--seed", "1", "--num_train", "12", "--num_test", "7"),
        *("--image_size", "16", "--num_neighbors", "3"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert '"train": 12' in result.stdout
    assert (out_dir / "test.csv").is_file()
