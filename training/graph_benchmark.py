"""Graph benchmark: the exported serving graphs side by side, in one run, on one machine.

Each graph is exported as ``make train`` exports it and run in a TF1 session, as TF Serving runs
it: throughput at batch 256 (one caller, two concurrent callers) and the latency of a single
review (median and 99th percentile). The graphs:

- ``mlp-legacy``: the n-gram MLP with the featurizer that ``NgramFeatures`` replaced: n-gram
  *strings* built with ``tf.strings.ngrams`` after the earlier four-pass standardize, looked up
  in a string table, in two string shards. It lives here only, as the reference.
- ``mlp-no-shards``: today's graph (``TextVectorization`` word ids, integer n-gram keys, the
  first Dense layer folded with the n-gram weights) with the batch not cut into shards, to show
  what the shards bring.
- ``mlp``: today's graph and serving function, as shipped.
- ``sepcnn``: the sequence CNN as shipped (``TextVectorization`` word ids, cut to a length).

The three MLP graphs share one vocabulary (selected on the training split, as ``make train``
does) and one classifier, so they must predict the same: the largest difference is reported.
The classifiers are untrained; throughput does not depend on the weights' values. Rounds run the
graphs in turn, and the median over rounds is reported, so that drift on a noisy machine hits
every graph alike. Writes ``<out>/bench-graph.json`` and ``<out>/bench-graph.md``.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from serving.cli_args import usable_cpus
from serving.contract import INPUT_KEY, OUTPUT_PROBABILITY, SIGNATURE_NAME
from serving.savedmodel import SessionBundle
from training import data as data_lib
from training.benchmark import THROUGHPUT_BATCH_SIZE, graph_throughput
from training.config import TrainConfig
from training.export import export_model
from training.model import build_classifier, build_sepcnn, build_text_model
from training.vectorize import (
    Vocabulary,
    ngram_featurizer,
    select_vocabulary,
    select_words,
    sequence_featurizer,
    weighted_presence,
)

# Single-review calls timed per graph and round, after a few untimed ones.
LATENCY_CALLS = 1000
LATENCY_WARMUP_CALLS = 50
# Validation reviews on which the MLP graphs' predictions are compared.
AGREEMENT_REVIEWS = 2000
GRAPHS = {
    "mlp-legacy": "n-gram MLP, legacy featurizer: n-gram strings (tf.strings.ngrams), string table",
    "mlp-no-shards": "n-gram MLP, TextVectorization ids, integer n-gram keys, folded first layer; "
    "batch not cut",
    "mlp": "n-gram MLP, TextVectorization ids, integer n-gram keys, folded first layer (shipped)",
    "sepcnn": "sepCNN, TextVectorization word ids (shipped)",
}

# The legacy featurizer's standardize: every separator run, plain spaces included, replaced.
LEGACY_SEPARATOR_PATTERN = r"(?:<\s*br\s*/?\s*>|[^\pL\pN'’`])+"
LEGACY_APOSTROPHE_PATTERN = r"['’`]"
LEGACY_STRING_SHARDS = 2


def legacy_standardize(texts: tf.Tensor) -> tf.Tensor:
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, LEGACY_SEPARATOR_PATTERN, " ")
    texts = tf.strings.regex_replace(texts, LEGACY_APOSTROPHE_PATTERN, "")
    return tf.strings.strip(texts)


class LegacyNgramFeatures(keras.layers.Layer):
    """Raw strings to the same sparse features as ``NgramFeatures``, the way the project built
    them before: string n-grams looked up in a ``StringLookup``, two string shards per batch."""

    def __init__(self, vocabulary: Vocabulary, **kwargs):
        super().__init__(**kwargs)
        self.width = len(vocabulary) + 1
        self.ngram_widths = list(range(1, vocabulary.ngram_max + 1))
        self.lookup = keras.layers.StringLookup(
            vocabulary=vocabulary.ngrams, num_oov_indices=1, mask_token=None, name="ngram_ids"
        )
        self.feature_weights = self.add_weight(
            shape=(self.width,), initializer="zeros", trainable=False, name="feature_weights"
        )
        self.feature_weights.assign(np.concatenate([[0.0], vocabulary.weights]))

    def _ngram_ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
        tokens = tf.strings.split(legacy_standardize(texts))
        return self.lookup(tf.strings.ngrams(tokens, ngram_width=self.ngram_widths, separator=" "))

    def call(self, texts: tf.Tensor) -> tf.SparseTensor:
        size = tf.shape(texts)[0]
        bounds = [size * i // LEGACY_STRING_SHARDS for i in range(LEGACY_STRING_SHARDS + 1)]
        ids = tf.concat(
            [
                self._ngram_ids(texts[bounds[i] : bounds[i + 1]])
                for i in range(LEGACY_STRING_SHARDS)
            ],
            axis=0,
        )
        width = tf.constant(self.width, tf.int64)
        keys = tf.sort(tf.unique(ids.values + ids.value_rowids() * width).y)
        batch_size = tf.shape(texts, out_type=tf.int64)[0]
        return weighted_presence(
            keys // width, keys % width, batch_size, self.feature_weights, self.width
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.width)


def single_review_latency(export_path: Path, texts: list[str]) -> tuple[float, float]:
    """(median, 99th percentile) milliseconds of one review through the signature."""
    bundle = SessionBundle(export_path)
    try:
        inputs = [{INPUT_KEY: np.array([text], dtype=object)} for text in texts]
        for index in range(LATENCY_WARMUP_CALLS):
            bundle.run(SIGNATURE_NAME, inputs[index % len(inputs)])
        seconds = []
        for index in range(LATENCY_CALLS):
            started = time.perf_counter()
            bundle.run(SIGNATURE_NAME, inputs[index % len(inputs)])
            seconds.append(time.perf_counter() - started)
    finally:
        bundle.close()
    p50, p99 = np.percentile(seconds, [50, 99]) * 1000
    return float(p50), float(p99)


def export_graphs(split: data_lib.Split, config: TrainConfig, out: Path) -> dict[str, Path]:
    """The benchmark's graphs, exported under ``out``; vocabularies from the training split."""
    vocabulary = select_vocabulary(
        split.train_texts,
        split.train_labels,
        ngram_max=config.ngram_max,
        max_features=config.max_features,
        min_document_frequency=config.min_document_frequency,
        weighting=config.weighting,
    )
    keras.utils.set_random_seed(config.seed)
    classifier = build_classifier(len(vocabulary) + 1, config)
    mlp = build_text_model(ngram_featurizer(vocabulary), classifier)
    reviews = keras.Input(shape=(), dtype="string", name=INPUT_KEY)
    legacy = keras.Model(reviews, classifier(LegacyNgramFeatures(vocabulary)(reviews)))
    sequence = sequence_featurizer(
        select_words(split.train_texts, config.sepcnn_max_words), config.sepcnn_sequence_length
    )
    sepcnn = build_text_model(sequence, build_sepcnn(sequence.vocabulary_size, config))
    return {
        "mlp-legacy": export_model(legacy, out, version=1, shards=1),
        "mlp-no-shards": export_model(mlp, out, version=2, shards=1),
        "mlp": export_model(mlp, out, version=3),
        "sepcnn": export_model(sepcnn, out, version=4),
    }


def largest_disagreement(paths: list[Path], texts: list[str]) -> float:
    """The largest difference in probability between the graphs, over ``texts``."""
    outputs = []
    for path in paths:
        bundle = SessionBundle(path)
        try:
            inputs = {INPUT_KEY: np.array(texts, dtype=object)}
            outputs.append(bundle.run(SIGNATURE_NAME, inputs)[OUTPUT_PROBABILITY])
        finally:
            bundle.close()
    return float(max(np.abs(output - outputs[0]).max() for output in outputs))


def run_graph_benchmark(
    data_path: str | Path, out_dir: str | Path, config: TrainConfig, rounds: int = 3
) -> dict:
    """Exports the graphs, measures them ``rounds`` times in turn; writes and returns the JSON."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = data_lib.prepare(data_path, config.validation_fraction, config.seed).split
    texts = split.validation_texts
    measured: dict[str, list[dict]] = {name: [] for name in GRAPHS}
    with tempfile.TemporaryDirectory() as models:
        paths = export_graphs(split, config, Path(models))
        mlp_paths = [paths[name] for name in ("mlp-legacy", "mlp-no-shards", "mlp")]
        disagreement = largest_disagreement(mlp_paths, texts[:AGREEMENT_REVIEWS])
        for _ in range(rounds):
            for name, path in paths.items():
                p50, p99 = single_review_latency(path, texts)
                measured[name].append(
                    {
                        "one_caller": graph_throughput(path, texts),
                        "two_callers": graph_throughput(path, texts, callers=2),
                        "single_p50_ms": p50,
                        "single_p99_ms": p99,
                    }
                )
    rows = []
    for name, runs in measured.items():
        medians = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
        rows.append({"graph": name, "description": GRAPHS[name], **medians, "rounds": runs})
    legacy = rows[0]
    for row in rows:
        row["one_caller_vs_legacy"] = row["one_caller"] / legacy["one_caller"]
        row["two_callers_vs_legacy"] = row["two_callers"] / legacy["two_callers"]
    document = {
        "data": str(data_path),
        "batch_size": THROUGHPUT_BATCH_SIZE,
        "rounds": rounds,
        "mlp_graphs_largest_probability_difference": disagreement,
        "machine": {
            "cpus": usable_cpus(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
        },
        "graphs": rows,
    }
    (out_dir / "bench-graph.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "bench-graph.md").write_text(markdown(document))
    return document


def markdown(document: dict) -> str:
    """The results as a markdown table."""
    lines = [
        f"| graph | reviews/s, batch {document['batch_size']}, 1 caller | 2 callers "
        "| 1 review, p50 / p99 | 1 caller vs legacy |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in document["graphs"]:
        lines.append(
            f"| {row['graph']}: {row['description']} | {row['one_caller']:,.0f} "
            f"| {row['two_callers']:,.0f} | {row['single_p50_ms']:.2f} / "
            f"{row['single_p99_ms']:.2f} ms | {row['one_caller_vs_legacy']:.2f}x |"
        )
    lines.append("")
    lines.append(
        f"Median of {document['rounds']} rounds on {document['machine']['cpus']} CPUs; the MLP "
        "graphs' predictions differ by at most "
        f"{document['mlp_graphs_largest_probability_difference']:.1e}."
    )
    return "\n".join(lines) + "\n"
