"""tools/detector_study.py: its folds, its figures, its refusals, and a tiny study whose
out-of-fold probabilities never come from a model that saw the row."""

import json

import numpy as np
import pandas as pd
import pytest

from ldl_jax import inference
from tests.helpers.tiny import TINY_STUDY_FLAGS
from tools import detector_study, noise_splits, noise_study


def test_folds_are_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(7), [50, 9, 31, 4, 120, 17, 23])
    fold = detector_study.fold_of_rows(labels, 4, data_seed=11, seed=0)
    assert sorted(np.unique(fold)) == [0, 1, 2, 3]
    for label in range(7):
        counts = np.bincount(fold[labels == label], minlength=4)
        assert counts.max() - counts.min() <= 1, (label, counts)
    again = detector_study.fold_of_rows(labels, 4, data_seed=11, seed=0)
    other = detector_study.fold_of_rows(labels, 4, data_seed=11, seed=1)
    np.testing.assert_array_equal(fold, again)
    assert (fold != other).any()


def test_a_fold_keeps_the_other_rows_with_neighbours_among_themselves():
    rng = np.random.default_rng(0)
    num_rows = 60
    train = pd.DataFrame(
        {
            "subDirectory_filePath": [f"{i}.png" for i in range(num_rows)],
            "expression": rng.integers(0, 7, num_rows),
            "valence": rng.uniform(-1, 1, num_rows),
            "arousal": rng.uniform(-1, 1, num_rows),
            "knn": ["0"] * num_rows,
        }
    )
    fold = detector_study.fold_of_rows(train["expression"].to_numpy(), 3, data_seed=0, seed=0)
    kept = detector_study.fold_train_frame(train, fold, held_out=1)
    assert list(kept["subDirectory_filePath"]) == [f"{i}.png" for i in np.flatnonzero(fold != 1)]
    knn = noise_splits.parse_knn(kept)
    assert knn.shape == (len(kept), noise_splits.NUM_NEIGHBORS_WRITTEN)
    assert knn.max() < len(kept)
    va = kept[["valence", "arousal"]].to_numpy()
    distances = np.abs(va[:, None] - va[None]).sum(axis=-1)  # L1, as ldl_jax.va_knn
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(knn[:, 0], distances.argmin(axis=1))


def test_detection_figures_rank_the_most_suspect_first():
    flipped = np.array([True, False, True, False, False])
    perfect = detector_study.detection(np.array([0.9, 0.1, 0.8, 0.2, 0.3]), flipped)
    assert perfect == {"precision_at_k": 1.0, "auroc": 1.0}
    backwards = detector_study.detection(np.array([0.1, 0.9, 0.2, 0.8, 0.7]), flipped)
    assert backwards == {"precision_at_k": 0.0, "auroc": 0.0}


def test_cleanlab_flags_rows_whose_out_of_fold_probabilities_disagree():
    pytest.importorskip("cleanlab", reason="cleanlab is optional (tools/requirements-study.txt)")
    rng = np.random.default_rng(0)
    clean = np.repeat(np.arange(3), 40)
    given = clean.copy()
    flipped = rng.random(len(clean)) < 0.2
    given[flipped] = (clean[flipped] + 1) % 3
    # Out-of-fold probabilities of a model that learned the clean classes.
    probs = np.full((len(clean), 3), 0.05)
    probs[np.arange(len(clean)), clean] = 0.9
    figures = detector_study.cleanlab_detection(given, probs, flipped)
    assert figures["precision_at_k"] == 1.0 and figures["auroc"] == 1.0
    assert figures["flagged"] == flipped.sum()
    assert figures["flagged_precision"] == 1.0 and figures["flagged_recall"] == 1.0


def _study_json(folder, **settings):
    folder.mkdir(parents=True)
    saved = {name: None for name in noise_study.STUDY_SETTINGS}
    saved.update(config="configs/synthetic.py", set=[], data_seed=11, pretrain_epochs=0)
    saved.update(settings)
    (folder / "study.json").write_text(json.dumps(saved))


def test_a_study_without_the_runs_it_reads_is_refused_naming_them(tmp_path):
    _study_json(tmp_path / "study")
    args = [f"--study={tmp_path / 'study'}", "--noise=0.3", "--modes=uniform", "--seeds=2"]
    args.append(f"--results={tmp_path / 'D.md'}")
    with pytest.raises(SystemExit) as refused:
        detector_study.main(args)
    for name in ("ce_uniform30_s2", "ldlva_reference_uniform30_s2", "ldlva_uniform30_s2"):
        assert name in str(refused.value)
    assert not (tmp_path / "study" / "detectors").exists()
    assert not (tmp_path / "D.md").exists()

    # A cell already in the record (carried from the machine that scored it) needs no runs.
    record = tmp_path / "study" / "detectors" / "results.json"
    record.parent.mkdir()
    figures = {"precision_at_k": 0.625, "auroc": 0.75, "runs": 1, "num_flipped": 8}
    record.write_text(json.dumps({"uniform30_s2": {"λ, `ldlva`": figures}}))
    detector_study.main(args)
    report = (tmp_path / "D.md").read_text()
    assert "| 30% | uniform | λ, `ldlva` | 1 | 0.625 | 0.750 |" in report
    assert "- `not recorded`: uniform30_s2" in report

    # Cells scored on different training data (carried from two machines) say which is which.
    cells = {
        name: {"λ, `ldlva`": {**figures, "train_csv_sha256": digest}}
        for name, digest in [("uniform30_s1", "aa11"), ("uniform30_s2", "bb22")]
    }
    record.write_text(json.dumps(cells))
    detector_study.main([*args[:3], "--seeds=1,2", args[4]])
    report = (tmp_path / "D.md").read_text()
    assert "- `aa11`: uniform30_s1\n- `bb22`: uniform30_s2" in report
    assert "| 30% | uniform | λ, `ldlva` | 1 | 0.625 ± 0.000 | 0.750 ± 0.000 |" in report


@pytest.mark.parametrize("flag", ["--noise=0,0.3", "--folds=1"])
def test_settings_without_flipped_rows_or_folds_are_refused(tmp_path, flag):
    with pytest.raises(SystemExit, match=flag.split("=")[0]):
        detector_study.main([f"--study={tmp_path}", flag])


# Sixty rows: each of two folds' 24 training rows keeps 20 VA neighbours.
TINY_STUDY = TINY_STUDY_FLAGS + [
    "--num_train=60",
    "--noise=0.3",
    "--methods=ce,ldlva_reference,ldlva",
]


@pytest.mark.slow
def test_tiny_study_scores_every_detector_out_of_fold(tmp_path):
    pytest.importorskip("cleanlab", reason="cleanlab is optional (tools/requirements-study.txt)")
    study = tmp_path / "study"
    report = [f"--results={tmp_path / 'R.md'}", f"--plot={tmp_path / 'p.png'}"]
    noise_study.main(TINY_STUDY + [f"--out={study}", *report])
    detector_study.main(
        [f"--study={study}", "--noise=0.3", "--modes=proportional", "--seeds=0", "--folds=2"]
        + ["--jobs=1", f"--results={tmp_path / 'D.md'}"]
    )

    train = pd.read_csv(study / "data" / "splits" / "proportional30_s0" / "train.csv")
    given = train["expression"].to_numpy()
    flipped = given != train["expression_backup"].to_numpy()
    fold = detector_study.fold_of_rows(given, 2, data_seed=0, seed=0)
    for held_out in range(2):
        workdir = study / "detectors" / f"cefold{held_out + 1}of2_proportional30_s0"
        config = json.loads((workdir / "config.json").read_text())
        trained_on = set(pd.read_csv(config["data"]["train_csv"])["subDirectory_filePath"])
        held_rows = set(train["subDirectory_filePath"][fold == held_out])
        assert trained_on == set(train["subDirectory_filePath"]) - held_rows
        assert config["data"]["val_csv"].endswith("proportional30_s0/val.csv")
        assert config["lamb_lr"] == 0.0 and config["gamma"] == 0.0  # the ce baseline's config

    scores = json.loads((study / "detectors" / "results.json").read_text())["proportional30_s0"]
    assert {name: s["runs"] for name, s in scores.items()} == {
        "λ, `ldlva_reference` (defaults)": 1,
        "λ, `ldlva`": 1,
        "cross-entropy loss, `ce`": 1,
        "cleanlab, 2-fold out-of-fold": 2,
    }
    # The cross-entropy detector by hand, from the ce run's picked checkpoint.
    from ldl_jax.data import images, tables

    ce = inference.load(study / "runs" / "ce_proportional30_s0", "best")
    paths = tables.read_eval_table(
        study / "data" / "splits" / "proportional30_s0" / "train.csv",
        ce.config.data.image_dir,
        num_classes=7,
    ).paths
    probs = ce.probabilities(images.load_images(paths, 16))
    loss = -np.log(probs[np.arange(len(given)), given])
    k = int(flipped.sum())
    expected = flipped[np.argsort(-loss, kind="stable")[:k]].mean()
    assert scores["cross-entropy loss, `ce`"]["precision_at_k"] == pytest.approx(expected)
    text = (tmp_path / "D.md").read_text()
    assert "| 30% | proportional | cleanlab, 2-fold out-of-fold | 2 |" in text
    # Every detector names the training data the study's record says its runs read.
    digest = json.loads((study / "results.json").read_text())["ce_proportional30_s0"][
        "train_csv_sha256"
    ]
    assert {s["train_csv_sha256"] for s in scores.values()} == {digest}
    assert f"read the training data with SHA-256 `{digest}`" in text
