"""tools/noise_report.py: the noise study's choice of each method's setting and its tables."""

import pandas as pd

from tools import noise_report


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


def test_the_claim_names_the_baselines_a_study_left_out():
    summary = pd.DataFrame({"method": ["ce", "ldlva_reference", "ldlva"]})
    sentence = noise_report.baselines_sentence(summary)
    assert sentence.startswith("Baselines: ce, ldlva_reference;")
    assert "did not run label_smoothing, gce, knn_relabel:" in sentence
    every = pd.DataFrame({"method": [*noise_report.BASELINES, "ldlva"]})
    assert "did not run" not in noise_report.baselines_sentence(every)
