"""Data exploration: metrics, warnings, plots, report, and the model recommendation."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from training import data as data_lib
from training.explore import compute_metrics, recommend_model, write_exploration

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def frame_of(reviews: list[tuple[str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(reviews, columns=["review", "sentiment"])
    frame["label"] = frame["sentiment"].map({"negative": 0, "positive": 1})
    return frame


BALANCED = frame_of(
    [
        ("A good film.<br />Good acting!", "positive"),
        ("Bad, bad film.", "negative"),
        ("good good good", "positive"),
        ("a bad plot and bad acting", "negative"),
    ]
)


def test_metrics_of_a_small_set():
    metrics = compute_metrics(BALANCED)
    assert metrics["num_samples"] == 4 and metrics["num_classes"] == 2
    assert metrics["samples_per_class"] == {"negative": 2, "positive": 2}
    # Raw whitespace words: 5, 3, 3, 6 -> median 4.
    assert metrics["median_words_per_sample"] == 4.0
    assert metrics["samples_to_words_ratio"] == pytest.approx(1.0)
    assert metrics["recommended_model"] == "mlp"
    top = dict(metrics["top_words"])
    assert top["good"] == 5 and top["bad"] == 4 and "br" not in top


def test_recommendation_threshold():
    assert recommend_model(1499.9) == "mlp"
    assert recommend_model(1500) == "sepcnn"


def test_warnings_for_imbalance_and_short_samples():
    frame = frame_of([("fine", "positive")] * 9 + [("bad", "negative")])
    warnings = compute_metrics(frame)["warnings"]
    assert any("imbalanced: negative has 1" in w for w in warnings)
    assert any("very short" in w for w in warnings)
    assert compute_metrics(BALANCED)["warnings"] == [
        "Samples are very short (median 4 words): n-gram features will be sparse."
    ]


def test_empty_data_is_refused():
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(BALANCED.iloc[:0])


def test_writes_metrics_plots_and_report(tmp_path, demo_csv):
    metrics = write_exploration(data_lib.load_reviews(demo_csv), tmp_path, str(demo_csv))
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics and "_words_per_sample" not in saved
    for name in ("word_frequency.png", "sample_length.png", "samples_per_class.png"):
        content = (tmp_path / name).read_bytes()
        assert content.startswith(PNG_SIGNATURE) and len(content) > 5000
        assert f"]({name})" in (tmp_path / "report.md").read_text()
    report = (tmp_path / "report.md").read_text()
    assert "| number of samples | 400 |" in report
    assert "| recommended model | **mlp** |" in report


def test_explore_cli(tmp_path, demo_csv, capsys):
    from training.__main__ import main

    assert main(["explore", "--data", str(demo_csv), "--out", str(tmp_path)]) == 0
    assert "400 samples, 2 classes (negative 200, positive 200)" in capsys.readouterr().out
    assert main(["explore", "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 1
