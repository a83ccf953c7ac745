"""tools/make_occluded.py: occluded copies of a test set."""

import pathlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers.release_fakes import run_main, write_jpeg
from tools import make_occluded


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
