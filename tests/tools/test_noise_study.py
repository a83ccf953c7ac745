"""tools/noise_study.py: its baselines and settings, and a tiny study whose figures come from the
runs (the splits are in test_noise_splits.py, the report's tables in test_noise_report.py)."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tests.helpers.tiny import TINY_STUDY_FLAGS
from tools import noise_splits, noise_study

TINY = TINY_STUDY_FLAGS + [
    "--num_train=50",
    "--noise=0,0.3",
    "--methods=ce,ldlva",
    "--pretrain_epochs=1",
    "--pretrain_num_train=40",
]


@pytest.mark.slow
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
    # The data every run read, so a study continued elsewhere can be checked to match.
    clean_csv = (out / "data" / "clean" / "train.csv").read_bytes()
    assert f"SHA-256 `{hashlib.sha256(clean_csv).hexdigest()[:16]}`" in report
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"

    def no_training(*_, **__):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(noise_study, "train_one", no_training)
    noise_study.main(args)  # everything, pre-training too, finished: only the report is rewritten
    with pytest.raises(SystemExit, match="--data_seed was 0, now 4"):
        noise_study.main(args + ["--data_seed=4"])

    # Every record names the data its run read and the backbone it started from; a record made
    # elsewhere from other data, or from another pre-training, stops the study before anything
    # is trained.
    digest = hashlib.sha256(clean_csv).hexdigest()
    assert {result["train_csv_sha256"] for result in results.values()} == {digest}
    backbones = {result["backbone_sha256"] for result in results.values()}
    assert backbones == {noise_study.backbone_digest(str(pretrained))}
    assert noise_study.backbone_digest(str(out / "runs" / "ce_clean_s0")) not in backbones
    original = json.dumps(results)
    results["ce_clean_s0"]["train_csv_sha256"] = "0" * 64
    (out / "results.json").write_text(json.dumps(results))
    with pytest.raises(
        SystemExit, match=r"1 finished run\(s\) read other training data .*ce_clean_s0 \(0000"
    ):
        noise_study.main(args)
    results = json.loads(original)
    del results["ldlva_clean_s0"]["backbone_sha256"]
    (out / "results.json").write_text(json.dumps(results))
    with pytest.raises(
        SystemExit,
        match=r"started from another pre-trained backbone .*ldlva_clean_s0 \(none recorded",
    ):
        noise_study.main(args)


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


def test_unknown_method_is_refused():
    with pytest.raises(SystemExit):
        noise_study.main(["--methods=ce,bogus"])


def test_only_ldlva_methods_learn_lambda():
    assert set(noise_study.LEARNS_LAMBDA) == {
        name for name in noise_study.METHODS if name.startswith("ldlva")
    }
