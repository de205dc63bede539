"""The training benchmark: both model families next to the scikit-learn baseline."""

from __future__ import annotations

import json

import pytest

from tests.helpers import TINY_TRAINING
from training.config import TrainConfig


def test_benchmark_trains_both_families_next_to_the_baseline(tmp_path, demo_csv):
    from training.benchmark import run_benchmark

    config = TrainConfig(**TINY_TRAINING).replace(max_epochs=3)
    document = run_benchmark(demo_csv, tmp_path, config)
    assert [row["family"] for row in document["models"]] == ["mlp", "sepcnn"]
    for ours in document["models"]:
        assert 0.5 < ours["val_accuracy"] <= 1
        assert ours["model_megabytes"] > 0 and ours["train_seconds"] > 0
        assert ours["reviews_per_second_1_caller"] > 100
        assert ours["reviews_per_second_2_callers"] > 100
    assert 0.5 < document["baseline"]["val_accuracy"] <= 1
    assert json.loads((tmp_path / "bench-train.json").read_text()) == document
    table = (tmp_path / "bench-train.md").read_text().splitlines()
    assert table[0].startswith("| model | val accuracy |")
    assert table[2].startswith("| n-gram MLP:") and table[3].startswith("| sepCNN:")
    assert "LogisticRegression" in table[4]


def test_graph_benchmark_compares_the_serving_graphs_in_one_run(tmp_path, demo_csv):
    from training.graph_benchmark import GRAPHS, run_graph_benchmark

    document = run_graph_benchmark(demo_csv, tmp_path, TrainConfig(**TINY_TRAINING), rounds=1)
    assert [row["graph"] for row in document["graphs"]] == list(GRAPHS)
    # The legacy and the new featurizer feed one classifier: the same predictions.
    assert document["mlp_graphs_largest_probability_difference"] < 1e-5
    for row in document["graphs"]:
        assert row["one_caller"] > 100 and row["two_callers"] > 100
        assert 0 < row["single_p50_ms"] <= row["single_p99_ms"]
    # The ratios are each graph's throughput over the legacy graph's (row 0), measured in one run.
    legacy = document["graphs"][0]
    for row in document["graphs"]:
        for key in ("one_caller", "two_callers"):
            assert row[f"{key}_vs_legacy"] == pytest.approx(row[key] / legacy[key])
    assert json.loads((tmp_path / "bench-graph.json").read_text()) == document
    table = (tmp_path / "bench-graph.md").read_text().splitlines()
    assert table[0].startswith("| graph | reviews/s, batch 256, 1 caller |")
    assert table[2].startswith("| mlp-legacy:") and table[5].startswith("| sepcnn:")
