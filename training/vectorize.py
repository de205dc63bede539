"""Tokenisation, n-gram vocabulary selection and the in-graph featurizer.

The vocabulary and its weights are computed outside the graph with scikit-learn, so that the
feature selection (ANOVA F-value, top k) and naive-Bayes weighting are
possible; the result is handed to ``NgramFeatures``, which runs the same standardisation,
whitespace split and n-gram join inside the exported graph with standard TF string ops. Both
sides tokenise through ``standardize`` below, and a test checks that they find the same n-grams.
``SequenceFeatures`` turns the same standardised words into ids for the sequence model.
"""

from __future__ import annotations

import collections
import logging
import warnings
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.feature_selection import f_classif

logger = logging.getLogger(__name__)

# Word separators, each run replaced by one space: HTML line breaks such as "<br />" (IMDB
# reviews carry them) and anything that is neither a letter, a digit nor an apostrophe. One
# space between words makes a split on " " equal to Python's str.split().
SEPARATOR_PATTERN = r"(?:<\s*br\s*/?\s*>|[^\pL\pN'’`])+"
# Apostrophes are dropped so that "don't" and "dont" are one token.
APOSTROPHE_PATTERN = r"['’`]"
# How many texts standardize_texts sends through the graph function at once.
STANDARDIZE_BATCH_SIZE = 4096


@keras.saving.register_keras_serializable(package="imdb")
def standardize(texts: tf.Tensor) -> tf.Tensor:
    """Lower-cases, turns ``<br />`` and punctuation into single spaces, drops apostrophes.

    Only standard TensorFlow string ops, so the exported graph runs in ``tensorflow/serving``.
    Four passes over the text: this runs for every review served.
    """
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, SEPARATOR_PATTERN, " ")
    texts = tf.strings.regex_replace(texts, APOSTROPHE_PATTERN, "")
    return tf.strings.strip(texts)


def standardize_texts(texts: list[str]) -> list[str]:
    """Runs ``standardize`` eagerly over Python strings (for the scikit-learn side)."""
    result: list[str] = []
    for start in range(0, len(texts), STANDARDIZE_BATCH_SIZE):
        batch = tf.constant(texts[start : start + STANDARDIZE_BATCH_SIZE], dtype=tf.string)
        result.extend(value.decode("utf-8") for value in standardize(batch).numpy())
    return result


def whitespace_tokens(text: str) -> list[str]:
    """Splits a standardised text the way ``tf.strings.split`` does in the graph: on runs of
    whitespace, with no empty tokens (a lone apostrophe leaves two spaces behind)."""
    return text.split()


# Feature weightings: "nb" multiplies each present n-gram by its naive-Bayes log-count ratio
# (Wang & Manning 2012), "idf" by its smoothed inverse document frequency.
WEIGHTINGS = ("nb", "idf")
# Naive-Bayes smoothing: pseudo-count added to every n-gram's count in each class.
NB_ALPHA = 1.0
# Reviews featurised per batch when the training features are computed once.
FEATURIZE_BATCH_SIZE = 1024
# The string work of one batch is split into this many independent shards, which a session
# runs on separate cores, so that one large request uses the pod's 2 CPUs. make bench-train,
# batch 256, one caller: 8,753 reviews/s unsharded; 9,752-11,109 with 2 shards (VM noise).
STRING_SHARDS = 2


@dataclass(frozen=True)
class Vocabulary:
    """The selected n-grams and one weight each, in the featurizer's column order."""

    ngrams: list[str]
    weights: np.ndarray
    ngram_max: int
    weighting: str

    def __len__(self) -> int:
        return len(self.ngrams)


def select_vocabulary(
    texts: list[str],
    labels: np.ndarray,
    ngram_max: int = 3,
    max_features: int = 100_000,
    min_document_frequency: int = 2,
    weighting: str = "nb",
) -> Vocabulary:
    """Chooses the ``max_features`` n-grams with the highest ANOVA F-value on these texts.

    Args:
        texts: raw training reviews (never the validation ones: that would leak).
        labels: 0/1 targets of ``texts``.
        ngram_max: longest n-gram; every length from 1 up to it is used.
        max_features: how many n-grams to keep.
        min_document_frequency: n-grams in fewer training reviews are dropped first.
        weighting: "nb" or "idf" (see ``WEIGHTINGS``).

    Returns:
        The n-grams, best first, with their weights computed on ``texts``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    counter = CountVectorizer(
        tokenizer=whitespace_tokens,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, ngram_max),
        min_df=min_document_frequency,
        binary=True,
        dtype=np.float32,
    )
    presence = counter.fit_transform(standardize_texts(texts))
    if presence.shape[1] == 0:
        raise ValueError(
            f"no n-gram occurs in {min_document_frequency} or more training reviews; "
            "lower min_document_frequency or provide more data"
        )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # Perfectly separating n-grams divide by a zero within-class variance (score inf) and
        # constant ones give NaN; both are expected on small data.
        warnings.simplefilter("ignore", UserWarning)
        scores, _ = f_classif(presence, labels)
    # Constant features carry no information; perfect separators rank first.
    scores = np.nan_to_num(scores, nan=0.0, posinf=np.finfo(np.float64).max)
    # Stable sort on (-score, name) so that the same data gives the same vocabulary.
    names = counter.get_feature_names_out()
    order = np.lexsort((names, -scores))[:max_features]
    selected = presence[:, order]
    labels = np.asarray(labels)
    if weighting == "nb":
        positive = NB_ALPHA + np.asarray(selected[labels == 1].sum(axis=0)).ravel()
        negative = NB_ALPHA + np.asarray(selected[labels == 0].sum(axis=0)).ravel()
        weights = np.log((positive / positive.sum()) / (negative / negative.sum()))
    else:
        document_frequency = np.asarray(selected.sum(axis=0)).ravel()
        weights = np.log((1.0 + presence.shape[0]) / (1.0 + document_frequency)) + 1.0
    logger.info(
        "Selected %d of %d n-grams (1- to %d-grams, min_df=%d, %s weights)",
        len(order),
        presence.shape[1],
        ngram_max,
        min_document_frequency,
        weighting,
    )
    return Vocabulary(names[order].tolist(), weights.astype(np.float32), ngram_max, weighting)


@keras.saving.register_keras_serializable(package="imdb")
class NgramFeatures(keras.layers.Layer):
    """Raw review strings to a sparse, L2-normalised, weighted n-gram presence matrix.

    Column 0 is the out-of-vocabulary bucket (weighted 0), then the vocabulary's n-grams in
    order. The output is a ``tf.SparseTensor`` [batch, len(vocab) + 1]: a review holds a few
    hundred n-grams out of 100k, and the first Dense layer multiplies the sparse matrix directly.
    Standard TF ops only (string ops, lookup table, bincount, gather). The string steps are
    spelled out rather than left to ``TextVectorization``, whose extra steps cost a third of the
    serving throughput (9k vs 12.4k reviews/s at batch 256, measured here).
    """

    def __init__(self, vocabulary: Vocabulary, **kwargs):
        super().__init__(**kwargs)
        self.width = len(vocabulary) + 1
        self.ngram_widths = list(range(1, vocabulary.ngram_max + 1))
        # A Keras layer owns the lookup table, so that the export tracks and initialises it.
        self.lookup = keras.layers.StringLookup(
            vocabulary=vocabulary.ngrams, num_oov_indices=1, mask_token=None, name="ngram_ids"
        )
        self.feature_weights = self.add_weight(
            shape=(self.width,), initializer="zeros", trainable=False, name="feature_weights"
        )
        self.feature_weights.assign(np.concatenate([[0.0], vocabulary.weights]))

    def _ngram_ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
        tokens = tf.strings.split(standardize(texts))
        return self.lookup(tf.strings.ngrams(tokens, ngram_width=self.ngram_widths, separator=" "))

    def call(self, texts: tf.Tensor) -> tf.SparseTensor:
        # Independent shards of the batch: the session runs their string ops in parallel.
        size = tf.shape(texts)[0]
        bounds = [size * shard // STRING_SHARDS for shard in range(STRING_SHARDS + 1)]
        ids = tf.concat(
            [self._ngram_ids(texts[bounds[i] : bounds[i + 1]]) for i in range(STRING_SHARDS)],
            axis=0,
        )
        # Binary presence: each (review, n-gram) pair once. Keys row * width + id, deduplicated
        # and sorted, give the SparseTensor's indices in canonical (row, column) order; unlike
        # tf.sparse.bincount on ragged ids, this also handles an empty batch.
        width = tf.constant(self.width, tf.int64)
        keys = tf.sort(tf.unique(ids.values + ids.value_rowids() * width).y)
        rows, columns = keys // width, keys % width
        batch_size = tf.shape(texts, out_type=tf.int64)[0]
        values = tf.gather(tf.convert_to_tensor(self.feature_weights), columns)
        squared_norms = tf.math.unsorted_segment_sum(
            tf.square(values), rows, num_segments=batch_size
        )
        # Reviews without a known n-gram keep an all-zero row.
        values = values * tf.gather(tf.math.rsqrt(tf.maximum(squared_norms, 1e-12)), rows)
        return tf.SparseTensor(
            tf.stack([rows, columns], axis=1), values, tf.stack([batch_size, width])
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.width)


def word_counts(texts: list[str]) -> collections.Counter[str]:
    """How often each word occurs in the standardised texts (the model's own tokenisation)."""
    counts: collections.Counter[str] = collections.Counter()
    for text in standardize_texts(texts):
        counts.update(whitespace_tokens(text))
    return counts


def select_words(texts: list[str], max_words: int) -> list[str]:
    """The ``max_words`` most frequent words of the standardised texts (ties by spelling)."""
    ranked = sorted(word_counts(texts).items(), key=lambda item: (-item[1], item[0]))
    logger.info(
        "Kept %d of %d words for the sequence model", min(max_words, len(ranked)), len(ranked)
    )
    return [word for word, _ in ranked[:max_words]]


@keras.saving.register_keras_serializable(package="imdb")
class SequenceFeatures(keras.layers.Layer):
    """Raw review strings to word ids [batch, sequence_length] for the sequence model.

    The same standardisation and split as ``NgramFeatures``; id 0 is padding, 1 an
    out-of-vocabulary word, then ``words`` in order. Reviews are cut after ``sequence_length``
    words and padded with 0 up to it.
    """

    def __init__(self, words: list[str], sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = sequence_length
        self.vocabulary_size = len(words) + 2
        # A Keras layer owns the lookup table, so that the export tracks and initialises it.
        self.lookup = keras.layers.StringLookup(
            vocabulary=words, num_oov_indices=1, mask_token="", name="word_ids"
        )

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        ids = self.lookup(tf.strings.split(standardize(texts)))
        return ids.to_tensor(default_value=0, shape=[None, self.sequence_length])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.sequence_length)

    def compute_output_spec(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        return keras.KerasTensor((inputs.shape[0], self.sequence_length), dtype="int64")


def featurize(
    features: NgramFeatures | SequenceFeatures, texts: list[str]
) -> tf.SparseTensor | tf.Tensor:
    """A featurizer's output for many texts, computed in batches (for training and tuning):
    sparse n-gram features, or word-id sequences."""
    batches = [
        features(tf.constant(texts[start : start + FEATURIZE_BATCH_SIZE], dtype=tf.string))
        for start in range(0, len(texts), FEATURIZE_BATCH_SIZE)
    ]
    if isinstance(features, NgramFeatures):
        return tf.sparse.concat(axis=0, sp_inputs=batches)
    return tf.concat(batches, axis=0)
