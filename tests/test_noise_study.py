"""The noise study on a tiny set: its figures come from the runs, and it resumes."""

import json

import pytest

from tools import noise_study

TINY = [
    "--num_train=40",
    "--num_test=13",
    "--image_size=16",
    "--seeds=0",
    "--noise=0,0.3",
    "--modes=proportional",
    "--methods=ce,ldlva",
    "--ablations=",
    "--jobs=1",
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


def test_tiny_study_reports_its_runs_and_skips_finished_ones(tmp_path, monkeypatch):
    args = TINY + [
        f"--out={tmp_path / 'study'}",
        f"--results={tmp_path / 'RESULTS.md'}",
        f"--plot={tmp_path / 'study.png'}",
    ]
    noise_study.main(args)

    results = json.loads((tmp_path / "study" / "results.json").read_text())
    assert sorted(results) == [
        "ce_clean_s0",
        "ce_proportional30_s0",
        "ldlva_clean_s0",
        "ldlva_proportional30_s0",
    ]
    pretrained = tmp_path / "study" / "pretrain"
    assert json.loads((pretrained / "config.json").read_text())["lamb_lr"] == 0.0  # plain CE
    for name, result in results.items():
        run = tmp_path / "study" / "runs" / name
        test = json.loads((run / "eval_results.json").read_text())
        assert json.loads((run / "config.json").read_text())["model"]["pretrained"] == str(
            pretrained
        )
        assert result["accuracy"] == test["test"]["accuracy"]
        assert result["balanced_accuracy"] == test["test"]["balanced_accuracy"]
    # 30% of 40 rows, per class int(n_k * 0.3), are flipped; lambda is learned only by LDLVA.
    assert 0 < results["ldlva_proportional30_s0"]["num_flipped"] <= 12
    assert 0.0 <= results["ldlva_proportional30_s0"]["precision_at_k"] <= 1.0
    assert "precision_at_k" not in results["ce_proportional30_s0"]
    report = (tmp_path / "RESULTS.md").read_text()
    accuracy = 100 * results["ldlva_proportional30_s0"]["accuracy"]
    assert f"| 30% | proportional | ldlva | 1 | {accuracy:.1f} |" in report
    words = " ".join(report.split())  # the methods' paragraph is wrapped
    assert "`ldlva` LDLVA as ldl_jax's configs run it" in words
    assert "`ldlva_reference`" not in words  # only the methods the study ran are described
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"

    def no_training(*_):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(noise_study, "train_one", no_training)
    noise_study.main(args)  # everything, pre-training too, finished: only the report is rewritten


def test_bank_ablation_is_ldlva_with_the_memory_bank(tmp_path):
    args = noise_study.build_parser().parse_args(
        ["--methods=ce", "--ablations=ldlva_bank", "--ablation_noise=0.3", "--seeds=0"]
    )
    [bank_run] = [run for run in noise_study.plan(args) if run["method"] == "ldlva_bank"]
    assert bank_run["name"] == "ldlva_bank_proportional30_s0"
    overrides = noise_study.run_overrides(args, tmp_path, {**bank_run, "noise": 0.0}, "")
    assert (
        noise_study._flag("neighbors", overrides["neighbors"]) == "--config.neighbors=memory_bank"
    )
    config = noise_study._load_config(args.config, overrides)
    assert config.neighbors == "memory_bank" and config.lamb_fixed_class_mean


def test_unknown_method_is_refused():
    with pytest.raises(SystemExit):
        noise_study.main(["--methods=ce,bogus"])
