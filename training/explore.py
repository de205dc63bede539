"""Explore a labelled review set, and recommend a model.

Six metrics (number of samples, number of classes, samples per class, median words per sample,
word frequency distribution, sample length distribution), plotted as well as counted, and the
model family that Google's text classification guide picks from the ratio of samples to words
per sample: below ``SEQUENCE_MODEL_RATIO`` an n-gram MLP, above it a sequence model (sepCNN).

``write_exploration`` writes ``metrics.json``, three PNG plots and ``report.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or expected
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from training import data as data_lib
from training.config import SEQUENCE_MODEL_RATIO, recommend_model, samples_to_words_ratio
from training.data import words_per_sample
from training.vectorize import word_counts

# Words listed in metrics.json and drawn in the word frequency plot.
TOP_WORDS = 50
# A class smaller than this share of the largest one is reported as imbalanced.
IMBALANCE_RATIO = 0.5
# Median words per sample under which samples are reported as very short.
SHORT_MEDIAN_WORDS = 10
# 95th percentile of words per sample above which samples are reported as very long.
LONG_P95_WORDS = 1000
PLOTS = {
    "word_frequency": "word_frequency.png",
    "sample_length": "sample_length.png",
    "samples_per_class": "samples_per_class.png",
}


def compute_metrics(frame: pd.DataFrame) -> dict:
    """The six metrics for a loaded frame (``training.data`` columns).

    Words per sample count whitespace-separated words of the raw text, as the guide does; the
    word frequencies use the model's own standardisation, so that HTML tags and punctuation do
    not dominate them.
    """
    if frame.empty:
        raise ValueError("cannot explore an empty data set")
    lengths = words_per_sample(frame[data_lib.REVIEW_COLUMN])
    median_words = float(np.median(lengths))
    per_class = frame[data_lib.SENTIMENT_COLUMN].value_counts().sort_index()
    ratio = samples_to_words_ratio(len(frame), median_words)
    counter = word_counts(frame[data_lib.REVIEW_COLUMN].tolist())
    return {
        "num_samples": len(frame),
        "num_classes": int(per_class.size),
        "samples_per_class": {label: int(count) for label, count in per_class.items()},
        "median_words_per_sample": median_words,
        "mean_words_per_sample": float(lengths.mean()),
        "words_per_sample_percentiles": {
            str(p): float(np.percentile(lengths, p)) for p in (5, 25, 75, 95, 99)
        },
        "min_words_per_sample": int(lengths.min()),
        "max_words_per_sample": int(lengths.max()),
        "samples_to_words_ratio": ratio,
        "recommended_model": recommend_model(ratio),
        "vocabulary_size": len(counter),
        "top_words": [[word, count] for word, count in counter.most_common(TOP_WORDS)],
        "duplicate_reviews": data_lib.find_duplicates(frame).duplicate_rows,
        "warnings": _warnings(per_class, median_words, lengths),
        "_words_per_sample": lengths.tolist(),
    }


def _warnings(per_class: pd.Series, median_words: float, words_per_sample: np.ndarray) -> list[str]:
    warnings = []
    if per_class.size < 2:
        warnings.append(f"Only one class ({per_class.index[0]}): nothing to classify.")
    elif per_class.min() < IMBALANCE_RATIO * per_class.max():
        warnings.append(
            f"Classes are imbalanced: {per_class.idxmin()} has {per_class.min()} samples, "
            f"{per_class.idxmax()} has {per_class.max()}. Accuracy will flatter the model; "
            "watch precision, recall and ROC AUC."
        )
    if median_words < SHORT_MEDIAN_WORDS:
        warnings.append(
            f"Samples are very short (median {median_words:.0f} words): n-gram features will "
            "be sparse."
        )
    p95 = float(np.percentile(words_per_sample, 95))
    if p95 > LONG_P95_WORDS:
        warnings.append(
            f"Samples are very long (95th percentile {p95:.0f} words): a sequence model must "
            "truncate them."
        )
    return warnings


def write_exploration(frame: pd.DataFrame, out_dir: str | Path, source: str) -> dict:
    """Writes metrics.json, the plots and report.md into ``out_dir``; returns the metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = compute_metrics(frame)
    words_per_sample = np.asarray(metrics.pop("_words_per_sample"))
    metrics["source"] = source
    _plot_word_frequency(metrics["top_words"], out_dir / PLOTS["word_frequency"])
    _plot_sample_length(words_per_sample, metrics, out_dir / PLOTS["sample_length"])
    _plot_samples_per_class(metrics["samples_per_class"], out_dir / PLOTS["samples_per_class"])
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(_report(metrics), encoding="utf-8")
    return metrics


def summary_line(metrics: dict) -> str:
    classes = ", ".join(f"{k} {v}" for k, v in metrics["samples_per_class"].items())
    return (
        f"{metrics['num_samples']} samples, {metrics['num_classes']} classes ({classes}), "
        f"median {metrics['median_words_per_sample']:.0f} words per sample, samples/words ratio "
        f"{metrics['samples_to_words_ratio']:.1f} -> recommended model: "
        f"{metrics['recommended_model']}"
        + (f"; {len(metrics['warnings'])} warning(s)" if metrics["warnings"] else "")
    )


def _plot_word_frequency(top_words: list, path: Path) -> None:
    words = [word for word, _ in top_words]
    counts = [count for _, count in top_words]
    figure, axes = plt.subplots(figsize=(12, 5))
    axes.bar(range(len(words)), counts, color="#4c72b0")
    axes.set_xticks(range(len(words)), words, rotation=75, fontsize=8)
    axes.set_xlabel("Word (after lower-casing and removing punctuation)")
    axes.set_ylabel("Occurrences in all samples")
    axes.set_title(f"Frequency distribution of words: the {len(words)} most frequent")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_sample_length(words_per_sample: np.ndarray, metrics: dict, path: Path) -> None:
    # The longest 1% would stretch the axis; they are counted in the last bin.
    upper = max(1.0, float(np.percentile(words_per_sample, 99)))
    figure, axes = plt.subplots(figsize=(10, 5))
    axes.hist(np.clip(words_per_sample, 0, upper), bins=50, color="#55a868")
    median = metrics["median_words_per_sample"]
    axes.axvline(median, color="black", linestyle="--", label=f"median {median:.0f} words")
    axes.set_xlabel("Words per sample (longest 1% counted in the last bin)")
    axes.set_ylabel("Number of samples")
    axes.set_title("Distribution of sample length")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _plot_samples_per_class(samples_per_class: dict, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6, 4))
    labels = list(samples_per_class)
    bars = axes.bar(labels, [samples_per_class[k] for k in labels], color="#c44e52")
    axes.bar_label(bars)
    axes.margins(y=0.12)  # room for the labels above the bars
    axes.set_xlabel("Class")
    axes.set_ylabel("Number of samples")
    axes.set_title("Samples per class")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _report(metrics: dict) -> str:
    percentiles = metrics["words_per_sample_percentiles"]
    lines = [
        "# Data exploration",
        "",
        f"Source: `{metrics['source']}`",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| number of samples | {metrics['num_samples']:,} |",
        f"| number of classes | {metrics['num_classes']} |",
        *(
            f"| samples of class `{label}` | {count:,} |"
            for label, count in metrics["samples_per_class"].items()
        ),
        f"| median words per sample | {metrics['median_words_per_sample']:.0f} |",
        f"| mean words per sample | {metrics['mean_words_per_sample']:.1f} |",
        f"| words per sample, 5th / 95th percentile | {percentiles['5']:.0f} / "
        f"{percentiles['95']:.0f} |",
        f"| shortest / longest sample (words) | {metrics['min_words_per_sample']} / "
        f"{metrics['max_words_per_sample']} |",
        f"| distinct words | {metrics['vocabulary_size']:,} |",
        f"| duplicate reviews | {metrics['duplicate_reviews']} |",
        f"| samples / median words per sample | {metrics['samples_to_words_ratio']:.1f} |",
        f"| recommended model | **{metrics['recommended_model']}** |",
        "",
        f"Ratio below {SEQUENCE_MODEL_RATIO}: an n-gram MLP (`mlp`); above it: a sequence model "
        "(`sepcnn`), as in Google's text classification guide.",
        "",
        "## Warnings",
        "",
        *([f"- {warning}" for warning in metrics["warnings"]] or ["None."]),
        "",
        "## Plots",
        "",
        f"![Frequency distribution of words]({PLOTS['word_frequency']})",
        "",
        f"![Distribution of sample length]({PLOTS['sample_length']})",
        "",
        f"![Samples per class]({PLOTS['samples_per_class']})",
        "",
    ]
    return "\n".join(lines)
