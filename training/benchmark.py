"""Training benchmark: both model families next to a scikit-learn baseline, in one run.

The data is loaded and split once; all are scored on the same grouped validation split. For
each family it records the wall time of training and export, the SavedModel's size on disk,
and the exported graph's throughput in a TF1 session as TF Serving runs it (batch 256, one
caller and two concurrent callers). The baseline is TF-IDF uni+bi-grams with
LogisticRegression, the usual reference.
Writes ``<out>/bench-train.json`` and ``<out>/bench-train.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from serving.cli_args import usable_cpus
from serving.contract import INPUT_KEY, SIGNATURE_NAME
from serving.savedmodel import SessionBundle
from training import data as data_lib
from training.config import MODEL_FAMILIES, TrainConfig
from training.evaluate import classification_report
from training.sources import DataSource
from training.train import train_and_export

# Reviews per session run in the throughput measurement (the cost limit's batch size).
THROUGHPUT_BATCH_SIZE = 256
# Batches per timed pass, and timed passes (the median is reported).
THROUGHPUT_BATCHES = 20
THROUGHPUT_PASSES = 3
# The baseline's regularisation: scikit-learn's usual strength for TF-IDF text models.
BASELINE_C = 4.0


def directory_megabytes(path: Path) -> float:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file()) / 1e6


def graph_throughput(export_path: Path, texts: list[str], callers: int = 1) -> float:
    """Reviews per second through the exported signature in a TF1 session.

    ``callers`` threads run batches at the same time, as concurrent requests (or TF Serving's
    batch threads) do; a session runs them in parallel.
    """
    bundle = SessionBundle(export_path)
    try:
        needed = THROUGHPUT_BATCH_SIZE * THROUGHPUT_BATCHES
        pool = (texts * (needed // max(1, len(texts)) + 1))[:needed]
        batches = [
            {INPUT_KEY: np.array(pool[i : i + THROUGHPUT_BATCH_SIZE], dtype=object)}
            for i in range(0, needed, THROUGHPUT_BATCH_SIZE)
        ]
        bundle.run(SIGNATURE_NAME, batches[0])  # warm up
        rates = []
        with ThreadPoolExecutor(max_workers=callers) as executor:
            for _ in range(THROUGHPUT_PASSES):
                started = time.perf_counter()
                list(executor.map(lambda batch: bundle.run(SIGNATURE_NAME, batch), batches))
                rates.append(needed / (time.perf_counter() - started))
        return float(np.median(rates))
    finally:
        bundle.close()


def run_baseline(split: data_lib.Split) -> dict:
    """TF-IDF (1-2-grams, sublinear tf) + LogisticRegression on the same split."""
    started = time.monotonic()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train = vectorizer.fit_transform(split.train[data_lib.REVIEW_COLUMN])
    model = LogisticRegression(C=BASELINE_C, max_iter=2000)
    model.fit(train, split.train[data_lib.LABEL_COLUMN])
    probabilities = model.predict_proba(
        vectorizer.transform(split.validation[data_lib.REVIEW_COLUMN])
    )[:, 1]
    report = classification_report(split.validation[data_lib.LABEL_COLUMN], probabilities)
    return {
        "model": f"scikit-learn TF-IDF 1-2-grams + LogisticRegression(C={BASELINE_C:g})",
        "val_accuracy": report["accuracy"],
        "val_roc_auc": report["roc_auc"],
        "train_seconds": round(time.monotonic() - started, 1),
        "features": len(vectorizer.vocabulary_),
    }


def run_benchmark(
    data_path: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    families: tuple[str, ...] = MODEL_FAMILIES,
) -> dict:
    """Trains each model family in ``families`` with ``config``'s other settings, then the
    baseline, all on the same split; writes the JSON and markdown tables and returns the JSON.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Loaded and split once: every family and the baseline see the same reviews.
    prepared = data_lib.prepare(data_path, config.validation_fraction, config.seed)
    models = [run_family(data_path, config.replace(model=family), prepared) for family in families]
    document = {
        "data": str(data_path),
        "split": prepared.summary(),
        "config": config.to_dict(),
        "machine": {
            "cpus": usable_cpus(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
        },
        "models": models,
        "baseline": run_baseline(prepared.split),
    }
    (out_dir / "bench-train.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "bench-train.md").write_text(markdown(document))
    return document


def run_family(data_path: str | Path, config: TrainConfig, prepared: data_lib.PreparedData) -> dict:
    """One family trained from prepared data to an exported version, with its size and
    throughput. ``train_seconds`` covers training and export (the data is loaded once, before).
    """
    validation_texts = prepared.split.validation_texts
    with tempfile.TemporaryDirectory() as models:
        started = time.monotonic()
        result = train_and_export(
            DataSource(Path(data_path), "given"), config, Path(models), prepared=prepared
        )
        wall_seconds = time.monotonic() - started
        return {
            "family": config.model,
            "model": describe_model(config),
            "val_accuracy": result.evaluation["accuracy"],
            "val_roc_auc": result.evaluation["roc_auc"],
            "train_seconds": round(wall_seconds, 1),
            "model_megabytes": round(directory_megabytes(result.export_path), 1),
            "reviews_per_second_1_caller": round(
                graph_throughput(result.export_path, validation_texts)
            ),
            "reviews_per_second_2_callers": round(
                graph_throughput(result.export_path, validation_texts, callers=2)
            ),
            "exported_model": result.evaluation["exported_model"],
            "epochs": result.epochs,
        }


def describe_model(config: TrainConfig) -> str:
    """The family and the settings that define it, for the table."""
    if config.model == "sepcnn":
        return (
            f"sepCNN: top {config.sepcnn_max_words} words, first {config.sepcnn_sequence_length} "
            f"per review, embedding {config.sepcnn_embedding_dim}, {config.sepcnn_blocks} blocks "
            f"of {config.sepcnn_filters} filters"
        )
    return (
        f"n-gram MLP: 1-{config.ngram_max}-grams, top {config.max_features} by F-value, "
        f"{config.weighting} weights, Dense({config.hidden_units})"
    )


def markdown(document: dict) -> str:
    baseline, split = document["baseline"], document["split"]
    rows = [
        "| model | val accuracy | val ROC AUC | train wall time | model size | "
        "graph throughput, batch 256 (1 / 2 callers) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows += [
        f"| {ours['model']} | {ours['val_accuracy']:.4f} | {ours['val_roc_auc']:.4f} | "
        f"{ours['train_seconds']:.0f} s (training and export) | "
        f"{ours['model_megabytes']:.1f} MB | {ours['reviews_per_second_1_caller']:,} / "
        f"{ours['reviews_per_second_2_callers']:,} reviews/s |"
        for ours in document["models"]
    ]
    rows.append(
        f"| {baseline['model']} | {baseline['val_accuracy']:.4f} | "
        f"{baseline['val_roc_auc']:.4f} | {baseline['train_seconds']:.0f} s (vectorise + fit) "
        "| - | - |"
    )
    notes = [
        "",
        f"Validation: {split['validation']} reviews held out from {split['train']} training "
        f"reviews, grouped by {split['grouped_by'] or 'nothing (no movie id)'}; "
        f"{document['machine']['cpus']} CPUs, TensorFlow {document['machine']['tensorflow']}.",
        *(f"Exported {ours['family']}: {ours['exported_model']}." for ours in document["models"]),
        "Throughput: the exported SavedModel in a TF1 session (as TF Serving runs it), "
        "validation reviews, median of 3 passes.",
    ]
    return "\n".join(rows + notes) + "\n"
