"""The noise study: its splits and baselines, and a tiny study whose figures come from the runs."""

import json

import numpy as np
import pandas as pd
import pytest

from tools import noise_report, noise_splits, noise_study

TINY = [
    "--num_train=50",
    "--num_test=13",
    "--image_size=16",
    "--seeds=0",
    "--noise=0,0.3",
    "--methods=ce,ldlva",
    "--no-alternatives",
    "--jobs=1",
    "--val_fraction=0.2",
    "--val_every_steps=3",
    "--pretrain_epochs=1",
    "--pretrain_num_train=40",
    "--set=model.backbone=resnet_tiny",
    "--set=input_size=16",
    "--set=pad_size=2",
    "--set=batch_size=4",
    "--set=num_neighbors=3",
    "--set=num_epochs=1",
    "--set=eval_batch_size=8",
    "--set=log_every_steps=5",
]


def test_val_rows_depend_on_the_data_seed_only():
    rows = noise_splits.val_rows(100, 0.1, data_seed=0)
    assert len(rows) == 10 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, noise_splits.val_rows(100, 0.1, data_seed=0))
    assert not np.array_equal(rows, noise_splits.val_rows(100, 0.1, data_seed=1))
    with pytest.raises(ValueError, match="no rows"):
        noise_splits.val_rows(5, 0.01, data_seed=0)


def test_flips_are_seeded_by_data_seed_and_seed():
    clean = np.repeat(np.arange(7), 20)
    flips = {
        (d, s): noise_splits.noisy_labels(clean, 0.3, "proportional", d, s)
        for d in (0, 1)
        for s in (0, 1)
    }
    for noisy in flips.values():  # int(20 * 0.3) = 6 flipped per class
        assert all((noisy[clean == k] != k).sum() == 6 for k in range(7))
    patterns = [tuple(noisy != clean) for noisy in flips.values()]
    assert len(set(patterns)) == 4  # no two (data seed, seed) pairs share a flip pattern
    np.testing.assert_array_equal(
        flips[1, 0], noise_splits.noisy_labels(clean, 0.3, "proportional", 1, 0)
    )
    np.testing.assert_array_equal(noise_splits.noisy_labels(clean, 0.0, "uniform", 1, 0), clean)


def test_vote_keeps_ties_with_the_own_label_and_otherwise_follows_the_nearest():
    labels = np.array([0, 1, 1, 2, 2, 0])
    knn = np.array(
        [
            [1, 2, 3, 4],  # votes 0 | 1 1 2 2: tie of 1 and 2 without 0 -> row 1's label, 1
            [0, 5, 3, 2],  # votes 1 | 0 0 2 1: tie of 0 and 1 -> own label 1
            [1, 0, 3, 4],  # votes 1 | 1 0 2 2: tie of 1 and 2 -> own label 1
            [4, 0, 1, 2],  # votes 2 | 2 0 1 1: tie of 1 and 2 -> own label 2
            [0, 5, 1, 3],  # votes 2 | 0 0 1 2: tie of 0 and 2 -> own 2
            [3, 4, 0, 1],  # votes 0 | 2 2 0 1: tie of 0 and 2 -> own 0
        ]
    )
    np.testing.assert_array_equal(noise_splits.vote_labels(labels, knn, 4), [1, 1, 1, 2, 2, 0])
    # Two voters: row 0 sees 0 | 1 1 -> 1; row 3 sees 2 | 2 0 -> 2.
    np.testing.assert_array_equal(noise_splits.vote_labels(labels, knn, 2)[[0, 3]], [1, 2])


def test_split_rebuilds_the_training_rows_neighbours_among_themselves(tmp_path):
    rng = np.random.default_rng(0)
    num_rows = 40
    va = np.round(rng.uniform(-1, 1, (num_rows, 2)), 4)
    clean = pd.DataFrame(
        {
            "subDirectory_filePath": [f"train/{i:05d}.jpg" for i in range(num_rows)],
            "expression": rng.integers(0, 7, num_rows),
            "valence": va[:, 0],
            "arousal": va[:, 1],
            "knn": ["0"] * num_rows,  # stale: must be rebuilt
        }
    )
    path = tmp_path / "train.csv"
    clean.to_csv(path, index=False)
    noisy = (clean["expression"].to_numpy() + 1) % 7
    held_out = np.array([3, 7, 20])
    train, val = noise_splits.split_noisy_table(path, noisy, held_out)
    kept = np.setdiff1d(np.arange(num_rows), held_out)
    assert (
        val["subDirectory_filePath"].tolist() == clean["subDirectory_filePath"][held_out].tolist()
    )
    np.testing.assert_array_equal(val["expression"], noisy[held_out])
    np.testing.assert_array_equal(val["expression_backup"], clean["expression"][held_out])
    np.testing.assert_array_equal(train["expression"], noisy[kept])
    # Brute force: each kept row's nearest kept rows by L1 in VA space.
    points = va[kept]
    distances = np.abs(points[:, None] - points[None]).sum(-1)
    np.fill_diagonal(distances, np.inf)
    expected = np.argsort(distances, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(noise_splits.parse_knn(train), expected)


def test_tiny_study_picks_on_noisy_validation_and_reports_its_runs(tmp_path, monkeypatch):
    out = tmp_path / "study"
    args = TINY + [f"--out={out}", f"--results={tmp_path / 'R.md'}", f"--plot={tmp_path / 'p.png'}"]
    noise_study.main(args)

    results = json.loads((out / "results.json").read_text())
    assert sorted(results) == [
        "ce_clean_s0",
        "ce_proportional30_s0",
        "ldlva_clean_s0",
        "ldlva_proportional30_s0",
    ]
    pretrained = out / "pretrain"
    assert json.loads((pretrained / "config.json").read_text())["lamb_lr"] == 0.0  # plain CE
    val_csvs = set()
    for name, result in results.items():
        run = out / "runs" / name
        config = json.loads((run / "config.json").read_text())
        assert config["model"]["pretrained"] == str(pretrained)
        val_csvs.add(config["data"]["val_csv"])
        # The picked checkpoint is the first with the best noisy-validation accuracy.
        history = json.loads((run / "eval_results.json").read_text())["val_summary"]["history"]
        accuracies = [entry["accuracy"] for entry in history]
        assert result["picked_step"] == history[int(np.argmax(accuracies))]["step"]
        assert result["final_step"] == history[-1]["step"]
    # Both methods validate on the same noisy split; 20% of the 50 rows, held out.
    noisy_val = pd.read_csv(out / "data" / "splits" / "proportional30_s0" / "val.csv")
    assert val_csvs == {
        str(out / "data" / "splits" / "clean" / "val.csv"),
        str(out / "data" / "splits" / "proportional30_s0" / "val.csv"),
    }
    assert len(noisy_val) == 10
    train = pd.read_csv(out / "data" / "splits" / "proportional30_s0" / "train.csv")
    assert len(train) == 40
    flipped = (train["expression"] != train["expression_backup"]).to_numpy()
    assert flipped.any()

    # lambda's precision@k by hand, from the run's final theta.
    from ldl_jax import inspect as lambda_inspect

    _, lam, _ = lambda_inspect.read_lambdas(out / "runs" / "ldlva_proportional30_s0")
    k = int(flipped.sum())
    lowest = np.argsort(lam, kind="stable")[:k]
    ldlva = results["ldlva_proportional30_s0"]
    assert ldlva["precision_at_k"] == pytest.approx(flipped[lowest].mean())
    assert "precision_at_k" not in results["ce_proportional30_s0"]

    report = (tmp_path / "R.md").read_text()
    gap = 100 * (ldlva["picked_accuracy"] - results["ce_proportional30_s0"]["picked_accuracy"])
    assert f"| 30% | proportional | ce | {gap:+.1f} / " in report
    assert "a tuning set" in report and "neighbour label purity" in " ".join(report.split())
    assert "`ldlva_reference`" not in report  # only the methods the study ran are described
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"

    def no_training(*_, **__):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(noise_study, "train_one", no_training)
    noise_study.main(args)  # everything, pre-training too, finished: only the report is rewritten
    with pytest.raises(SystemExit, match="--data_seed was 0, now 4"):
        noise_study.main(args + ["--data_seed=4"])


def test_relabel_baseline_trains_cross_entropy_on_the_vote(tmp_path):
    args = noise_study.build_parser().parse_args(
        ["--methods=knn_relabel", "--seeds=1", "--noise=0.3", "--out", str(tmp_path)]
    )
    run, four_voters = noise_study.plan(args)
    assert four_voters["name"] == "knn_relabel+num_neighbors=4_proportional30_s1"
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pd.DataFrame(
        {
            "subDirectory_filePath": [f"train/{i}.jpg" for i in range(60)],
            "expression": np.arange(60) % 7,
            "valence": rng.uniform(-1, 1, 60).round(4),
            "arousal": rng.uniform(-1, 1, 60).round(4),
        }
    ).to_csv(clean / "train.csv", index=False)
    overrides = noise_study.run_overrides(args, tmp_path / "data", run, "")
    relabelled = pd.read_csv(overrides["data.train_csv"])
    voted = noise_splits.vote_labels(
        relabelled["expression_given"].to_numpy(), noise_splits.parse_knn(relabelled), 8
    )
    np.testing.assert_array_equal(relabelled["expression"], voted)
    assert overrides["lamb_lr"] == 0.0 and overrides["gamma"] == 0.0
    assert overrides["data.val_csv"].endswith("proportional30_s1/val.csv")
    four = noise_study.run_overrides(args, tmp_path / "data", four_voters, "")
    assert four["data.train_csv"].endswith("train_knn_vote4.csv")
    assert four["data.val_csv"] == overrides["data.val_csv"]  # the same rows for every method


def test_every_setting_of_a_method_is_the_config_its_variant_gives():
    """A method's settings are `--config` with its variant (`:reference` or `:ldl_jax`) and
    its overrides; the candidates differ from the method's own setting in their field only."""
    config = noise_study._load_config
    [(own, ldlva), (label, high)] = noise_study.candidates("ldlva")
    assert (own, label) == ("", "+lamb_init=1.5")
    ldl_jax = config("configs/synthetic.py", "ldl_jax", ldlva)
    assert ldl_jax.neighbor_distribution == "label" and ldl_jax.lamb_lr == 30.0
    assert config("configs/synthetic.py", "ldl_jax", high).lamb_init == 1.5
    reference = config("configs/synthetic.py", "reference", {})
    assert not reference.lamb_fixed_class_mean and reference.lamb_lr == 10.0
    assert noise_study.candidates("ce") == [("", noise_study.CE)]
    assert len(noise_study.candidates("ldlva", alternatives=False)) == 1


def test_the_noisy_validation_split_picks_each_methods_setting():
    def result(name, method, candidate, seed, val):
        return {
            "name": name,
            "method": method,
            "candidate": candidate,
            "noise": 0.3,
            "mode": "proportional",
            "seed": seed,
            "picked_val_accuracy": val,
        }

    results = [
        result("a", "ldlva", "", 0, 0.50),
        result("b", "ldlva", "+lamb_init=1.5", 0, 0.55),
        result("c", "ldlva", "", 1, 0.60),
        result("d", "ldlva", "+lamb_init=1.5", 1, 0.60),  # a tie keeps the method's own
        result("e", "ce", "", 0, 0.40),
    ]
    chosen = noise_report.select_candidates({r["name"]: r for r in results})
    assert sorted(chosen) == ["b", "c", "e"]


def test_claim_table_compares_ldlva_with_the_best_baseline():
    def result(method, seed, accuracy, balanced):
        return {
            "method": method,
            "noise": 0.3,
            "mode": "proportional",
            "seed": seed,
            "picked_accuracy": accuracy,
            "picked_balanced_accuracy": balanced,
            "final_accuracy": accuracy,
            "final_balanced_accuracy": balanced,
            "picked_step": 1,
        }

    results = {
        "a": result("ce", 0, 0.60, 0.40),
        "b": result("ce", 1, 0.62, 0.42),
        "c": result("gce", 0, 0.70, 0.50),
        "d": result("gce", 1, 0.66, 0.44),
        "e": result("ldlva", 0, 0.75, 0.52),
        "f": result("ldlva", 1, 0.73, 0.50),
    }
    table = noise_report.claim_table(noise_report.summarize(results))
    # best baseline gce (68.0 / 47.0); LDLVA 74.0 / 51.0; CE 61.0 / 41.0.
    assert "| 30% | proportional | gce | +6.0 / +4.0 | +13.0 / +10.0 |" in table


def test_unknown_method_is_refused():
    with pytest.raises(SystemExit):
        noise_study.main(["--methods=ce,bogus"])


def test_only_ldlva_methods_learn_lambda():
    assert set(noise_study.LEARNS_LAMBDA) == {
        name for name in noise_study.METHODS if name.startswith("ldlva")
    }
