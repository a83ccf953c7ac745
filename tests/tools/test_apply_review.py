"""tools/apply_review.py: the review page's decisions applied to a training CSV."""

import numpy as np
import pandas as pd
import pytest

from ldl_jax.va_knn import knn_in_va_space
from tests.helpers.workdirs import file_digests
from tools import apply_review


def _train(synthetic_dir):
    """The synthetic set's training CSV as text, as the tool reads it."""
    return pd.read_csv(synthetic_dir / "train.csv", dtype=str, keep_default_na=False)


def _write_decisions(path, rows):
    pd.DataFrame(rows, columns=["subDirectory_filePath", "given", "decision"]).to_csv(
        path, index=False
    )
    return path


def _apply(train_csv, decisions_csv, out, *extra):
    apply_review.main(
        ["--csv", str(train_csv), "--decisions", str(decisions_csv), "--out", str(out), *extra]
    )
    return pd.read_csv(out, dtype=str, keep_default_na=False)


def _other_label(label: str) -> str:
    return str((int(label) + 3) % 7)


def test_relabels_and_drops_and_rebuilds_knn(synthetic_dir, tmp_path):
    train = _train(synthetic_dir)
    paths, labels = train["subDirectory_filePath"], train["expression"]
    decisions = _write_decisions(
        tmp_path / "review_decisions.csv",
        [
            (paths[3], labels[3], f"relabel:{_other_label(labels[3])}"),
            (paths[10], labels[10], "drop"),
            (paths[17], labels[17], f"relabel:{_other_label(labels[17])}"),
            (paths[20], labels[20], "keep"),
            (paths[21], labels[21], f"relabel:{labels[21]}"),  # to its own label: kept
        ],
    )
    before = file_digests(synthetic_dir)
    reviewed = _apply(synthetic_dir / "train.csv", decisions, tmp_path / "reviewed.csv")

    assert file_digests(synthetic_dir) == before  # the input is never written
    kept = train.drop(index=10).reset_index(drop=True)
    assert list(reviewed.columns) == [*train.columns, "expression_original"]
    assert list(reviewed["subDirectory_filePath"]) == list(kept["subDirectory_filePath"])
    assert list(reviewed["expression_original"]) == list(kept["expression"])
    changed = reviewed["expression"] != kept["expression"]
    assert list(reviewed["subDirectory_filePath"][changed]) == [paths[3], paths[17]]
    assert list(reviewed["expression"][changed]) == [
        _other_label(labels[3]),
        _other_label(labels[17]),
    ]
    for column in ("valence", "arousal"):  # untouched text, not re-formatted numbers
        assert list(reviewed[column]) == list(kept[column])
    va = kept[["valence", "arousal"]].to_numpy(float)
    knn = np.array([[int(i) for i in row.split(";")] for row in reviewed["knn"]])
    np.testing.assert_array_equal(knn, knn_in_va_space(va, train["knn"][0].count(";") + 1))


def test_relabelling_alone_keeps_knn_and_the_first_original_label(synthetic_dir, tmp_path):
    train = _train(synthetic_dir)
    path, label = train["subDirectory_filePath"][5], train["expression"][5]
    first = _apply(
        synthetic_dir / "train.csv",
        _write_decisions(tmp_path / "d1.csv", [(path, label, f"relabel:{_other_label(label)}")]),
        tmp_path / "reviewed1.csv",
    )
    assert list(first["knn"]) == list(train["knn"])
    # A second review of the reviewed CSV relabels row 5 again; the original stays the first.
    second = _apply(
        tmp_path / "reviewed1.csv",
        _write_decisions(tmp_path / "d2.csv", [(path, _other_label(label), "relabel:0")]),
        tmp_path / "reviewed2.csv",
    )
    assert second["expression"][5] == "0"
    assert list(second["expression_original"]) == list(train["expression"])


def test_refuses_bad_decisions_one_line_each(synthetic_dir, tmp_path, capsys):
    train = _train(synthetic_dir)
    paths, labels = train["subDirectory_filePath"], train["expression"]
    decisions = _write_decisions(
        tmp_path / "review_decisions.csv",
        [
            (paths[0], labels[0], "drop"),  # line 2: fine
            ("train/not_there.jpg", "1", "keep"),  # line 3
            (paths[1], labels[1], "relabel:7"),  # line 4: 7 classes
            ("train/missing_too.jpg", "2", "drop"),  # line 5
            (paths[2], _other_label(labels[2]), "drop"),  # line 6: given is not the CSV's
            (paths[0], labels[0], "keep"),  # line 7: decided twice
            (paths[4], labels[4], "relabel"),  # line 8
        ],
    )
    out = tmp_path / "reviewed.csv"
    with pytest.raises(SystemExit) as exit_info:
        _apply(synthetic_dir / "train.csv", decisions, out)
    assert exit_info.value.code == 2
    errors = capsys.readouterr().err.strip().splitlines()
    expected = {
        3: "'train/not_there.jpg' is not in",
        4: "relabels outside [0, 7)",
        5: "'train/missing_too.jpg' is not in",
        6: f"given '{_other_label(labels[2])}' but",
        7: "was already decided on line 2",
        8: "is not keep, drop or relabel:K",
    }
    assert len(errors) == len(expected)
    for line, error in zip(expected, errors, strict=True):
        assert f"review_decisions.csv, line {line}: " in error
        assert expected[line] in error
    assert not out.exists()
    # With 8 classes the same relabel is accepted.
    fine = _write_decisions(tmp_path / "fine.csv", [(paths[1], labels[1], "relabel:7")])
    accepted = _apply(synthetic_dir / "train.csv", fine, out, "--num_classes", "8")
    assert accepted["expression"][1] == "7"


def test_never_overwrites_the_input(synthetic_dir, tmp_path):
    train = _train(synthetic_dir)
    source = tmp_path / "train.csv"
    train.to_csv(source, index=False)
    decisions = _write_decisions(
        tmp_path / "d.csv", [(train["subDirectory_filePath"][0], train["expression"][0], "drop")]
    )
    before = source.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        _apply(source, decisions, tmp_path / "." / "train.csv")
    assert exit_info.value.code == 2
    assert source.read_bytes() == before
