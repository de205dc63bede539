"""Tokenisation, n-gram vocabulary selection and the in-graph featurizers.

The vocabulary and its weights are computed outside the graph (n-grams counted with numpy and
pandas, ranked by scikit-learn's ANOVA F-value), so that the feature selection (top k) and
naive-Bayes weighting are possible. In the exported
graph, a ``keras.layers.TextVectorization`` layer (``standardize`` below, whitespace split,
``output_mode="int"``) turns review strings into word ids, for both model families:
- the n-gram MLP: ``NgramFeatures`` finds a word's unigram column by its id, and builds each
  2-3-gram as one integer from consecutive word ids, looked up in an int64 table of the selected
  n-grams, so no n-gram string is ever built; the word vocabulary holds every word of every
  selected n-gram, so the graph finds exactly the n-grams scikit-learn selected (a test checks
  it on tricky texts);
- the sepCNN: the word ids themselves, cut and padded to a fixed length.
Both sides tokenise through ``standardize``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import warnings
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd
import scipy.sparse
import tensorflow as tf
from sklearn.feature_selection import f_classif

logger = logging.getLogger(__name__)

# Word separators are HTML line breaks such as "<br />" (IMDB reviews carry them) and anything
# that is neither a letter, a digit nor an apostrophe. A run of them that holds at least one
# separator other than ASCII whitespace becomes one space, together with the whitespace around
# it. Plain whitespace between words is left alone, since the whitespace split handles it:
# replacing every space, as a simpler pattern would, made this the graph's most expensive step
# (2.1x slower; same tokens on 45,000 reviews).
_WHITESPACE = r"[ \t\n\r\f\v]"
_LINE_BREAK = r"<\s*br\s*/?\s*>"
SEPARATOR_PATTERN = (
    rf"{_WHITESPACE}*(?:{_LINE_BREAK}|[^\pL\pN'’` \t\n\r\f\v])(?:{_LINE_BREAK}|[^\pL\pN'’`])*"
)
# Apostrophes are dropped so that "don't" and "dont" are one token.
APOSTROPHE_PATTERN = r"['’`]"
# How many texts standardize_texts sends through the graph function at once.
STANDARDIZE_BATCH_SIZE = 4096


@keras.saving.register_keras_serializable(package="imdb")
def standardize(texts: tf.Tensor) -> tf.Tensor:
    """Lower-cases, turns ``<br />`` and punctuation into spaces, drops apostrophes.

    Only standard TensorFlow string ops, so the exported graph runs in ``tensorflow/serving``.
    The ``TextVectorization`` layers' standardize step: it runs for every review served. Its
    output is meant for a whitespace split: words may be apart by more than one space (and the
    text may start or end with one): collapsing that whitespace as well, with a third regex pass
    and a strip, cost 3% of the graph's time and changed no token (115,000 texts compared,
    invalid UTF-8 included).
    """
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, SEPARATOR_PATTERN, " ")
    return tf.strings.regex_replace(texts, APOSTROPHE_PATTERN, "")


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
# TextVectorization's word ids: 0 is padding (the sepCNN's fixed-length rows), 1 an
# out-of-vocabulary word, then the vocabulary's words in order.
PADDING_ID, OOV_ID, FIRST_WORD_ID = 0, 1, 2


@dataclass(frozen=True)
class Vocabulary:
    """The selected n-grams and one weight each, in the featurizer's column order."""

    ngrams: list[str]
    weights: np.ndarray
    ngram_max: int
    weighting: str

    def __len__(self) -> int:
        return len(self.ngrams)

    @property
    def words(self) -> list[str]:
        """Every word of every n-gram, in order of first appearance: the word vocabulary of the
        ``TextVectorization`` layer in front of ``NgramFeatures``."""
        return list(dict.fromkeys(word for ngram in self.ngrams for word in ngram.split(" ")))


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
    presence, names = ngram_presence(
        [whitespace_tokens(text) for text in standardize_texts(texts)],
        ngram_max,
        min_document_frequency,
    )
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
    # Sorted on (-score, name), so that the same data gives the same vocabulary.
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


def ngram_presence(
    documents: list[list[str]], ngram_max: int, min_document_frequency: int
) -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Which 1- to ``ngram_max``-grams of consecutive tokens occur in which document.

    The same matrix as scikit-learn's ``CountVectorizer(ngram_range=(1, ngram_max),
    min_df=min_document_frequency, binary=True)`` over these tokens, with its columns in another
    order (a test compares the two). CountVectorizer counts n-grams in a Python loop: 15 s of
    the 16 s that choosing the vocabulary took on the IMDB training split; here n-grams are
    integers, as in the graph, and counting takes 5 s.

    Returns:
        (presence, names): a float32 [documents, n-grams] matrix of ones, and each column's
        n-gram ("word word word"). Columns hold the n-grams in ``min_document_frequency`` or
        more documents, by length, then in order of first occurrence.
    """
    lengths = np.fromiter(map(len, documents), np.int64, len(documents))
    tokens = np.fromiter(itertools.chain.from_iterable(documents), object, int(lengths.sum()))
    word_ids, words = pd.factorize(tokens)
    word_ids = word_ids.astype(np.int64)
    token_documents = np.repeat(np.arange(len(documents), dtype=np.int64), lengths)
    rows, columns = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    names, width = [np.zeros(0, object)], 0
    # ngram_ids numbers the distinct n-grams of the current length, at each start position.
    ngram_ids, ngram_count = word_ids, len(words)
    for length in range(1, ngram_max + 1):
        if length > 1:
            # The n-gram at position i: the (n-1)-gram at i, then the word at i + n - 1. Its
            # key is below (tokens)^2, far from int64's limit.
            ngram_ids, distinct = pd.factorize(ngram_ids[:-1] * len(words) + word_ids[length - 1 :])
            ngram_ids, ngram_count = ngram_ids.astype(np.int64), len(distinct)
        # Start positions whose n-gram ends in the same document.
        stop = max(len(tokens) - length + 1, 0)
        starts = np.flatnonzero(token_documents[:stop] == token_documents[length - 1 :])
        if len(starts) == 0:
            break
        pairs = pd.unique(token_documents[starts] * ngram_count + ngram_ids[starts])
        pair_documents, pair_ngrams = np.divmod(pairs, ngram_count)
        kept = np.flatnonzero(
            np.bincount(pair_ngrams, minlength=ngram_count) >= min_document_frequency
        )
        column_of = np.full(ngram_count, -1, np.int64)
        column_of[kept] = np.arange(width, width + len(kept))
        in_kept = column_of[pair_ngrams] >= 0
        rows.append(pair_documents[in_kept])
        columns.append(column_of[pair_ngrams[in_kept]])
        # Each kept n-gram's name, from its first occurrence (assignments from the last start
        # to the first: the first one wins).
        first = np.empty(ngram_count, np.int64)
        first[ngram_ids[starts[::-1]]] = starts[::-1]
        first = first[kept]
        name = tokens[first]
        for offset in range(1, length):
            name = name + " " + tokens[first + offset]
        names.append(name)
        width += len(kept)
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    presence = scipy.sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, columns)), shape=(len(documents), width)
    )
    return presence, np.concatenate(names)


def text_vectorization(
    words: list[str], sequence_length: int | None = None
) -> keras.layers.TextVectorization:
    """The in-graph tokenizer of both families: review strings to word ids.

    ``standardize``, a whitespace split, then ids (``PADDING_ID``, ``OOV_ID``, then ``words``
    from ``FIRST_WORD_ID`` on). With ``sequence_length`` every row is cut and padded to that
    length (the sepCNN's input); without it the rows stay ragged (``NgramFeatures``' input).
    The layer keeps Keras' default name, so its ops carry ``text_vectorization`` in the graph.
    """
    return keras.layers.TextVectorization(
        standardize=standardize,
        split="whitespace",
        output_mode="int",
        vocabulary=words,
        output_sequence_length=sequence_length,
        ragged=sequence_length is None,
        name="text_vectorization",
    )


@keras.saving.register_keras_serializable(package="imdb")
class NgramFeatures(keras.layers.Layer):
    """Word ids (ragged, from ``text_vectorization(vocabulary.words)``) to a sparse,
    L2-normalised, weighted n-gram presence matrix.

    Columns: 0 is the out-of-vocabulary bucket (weight 0, left out of the output), then the
    vocabulary's n-grams in order. A word id finds its unigram's column in a dense array indexed
    by id. Each longer n-gram of consecutive ids ``a, b, c`` becomes one integer,
    ``(a * base + b) * base + c`` with ``base`` = number of ids, looked up in an int64 table of
    the selected 2- to ngram_max-grams; n-grams of different lengths fall in disjoint ranges,
    because no id of a word is below ``OOV_ID`` = 1. No n-gram string is ever built. An n-gram
    with an unknown word has a key that no selected n-gram has, because every word of a
    selected n-gram is in the word vocabulary.

    The output is a ``tf.SparseTensor`` [batch, len(vocabulary) + 1]: a review holds a few
    hundred n-grams out of 100k, and the first Dense layer multiplies the sparse matrix directly.
    Its entries are grouped by row, in row order (what that layer needs); within a row they are
    in order of first occurrence, not by column (``featurize`` puts them in canonical order).
    """

    def __init__(self, vocabulary: Vocabulary, **kwargs):
        super().__init__(**kwargs)
        words = vocabulary.words
        self.width = len(vocabulary) + 1
        # The longest selected n-gram: shorter than ngram_max when none of that length made the
        # cut (small data).
        self.longest_ngram = max((len(ngram.split(" ")) for ngram in vocabulary.ngrams), default=1)
        self.id_base = len(words) + FIRST_WORD_ID
        if self.id_base**self.longest_ngram > np.iinfo(np.int64).max:
            raise ValueError(
                f"{len(words)} words make {self.longest_ngram}-gram keys overflow int64; "
                "lower max_features or ngram_max"
            )
        word_ids = {word: index for index, word in enumerate(words, start=FIRST_WORD_ID)}
        unigram_columns = np.zeros(self.id_base, np.int64)
        keys, columns = [], []
        for column, ngram in enumerate(vocabulary.ngrams, start=1):
            ids = [word_ids[word] for word in ngram.split(" ")]
            if len(ids) == 1:
                unigram_columns[ids[0]] = column
                continue
            key = 0
            for word_id in ids:
                key = key * self.id_base + word_id
            keys.append(key)
            columns.append(column)
        self.unigram_columns = self.add_weight(
            shape=(self.id_base,),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            name="unigram_columns",
        )
        self.unigram_columns.assign(unigram_columns)
        # No table when only unigrams were selected (TF refuses an empty one). The layer tracks
        # the table, and so does the export (lookup_tables).
        self.ngram_columns = (
            tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(
                    np.array(keys, dtype=np.int64), np.array(columns, dtype=np.int64)
                ),
                default_value=0,
                name="ngram_columns",
            )
            if keys
            else None
        )
        self.feature_weights = self.add_weight(
            shape=(self.width,), initializer="zeros", trainable=False, name="feature_weights"
        )
        self.feature_weights.assign(np.concatenate([[0.0], vocabulary.weights]))

    def build(self, input_shape: tuple) -> None:
        self.built = True

    def _columns(self, values: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
        """[words, longest_ngram]: the columns of the 1- to longest_ngram-grams that start at
        each word (``values``: the batch's word ids, ``rows``: the review of each), rows in
        order; 0 for an n-gram not selected or one that would cross a row end."""
        count = tf.size(values)
        base = tf.constant(self.id_base, tf.int64)
        by_length, key = [tf.gather(self.unigram_columns, values)], values
        for length in range(2, self.longest_ngram + 1):
            key = key[:-1] * base + values[length - 1 :]
            same_row = tf.equal(rows[: 1 - length], rows[length - 1 :])
            columns = tf.where(same_row, self.ngram_columns.lookup(key), 0)
            tail = tf.zeros([tf.minimum(count, length - 1)], tf.int64)
            by_length.append(tf.concat([columns, tail], axis=0))
        return tf.stack(by_length, axis=1)

    def present(self, ids: tf.RaggedTensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(rows, columns) of the distinct (review, selected n-gram) pairs: binary presence,
        each pair once, grouped by row in row order, in order of first occurrence within a row."""
        rows = ids.value_rowids()
        columns = self._columns(ids.values, rows)
        width = tf.constant(self.width, tf.int64)
        pairs = tf.expand_dims(rows * width, 1) + columns
        pairs = tf.unique(tf.boolean_mask(pairs, columns > 0)).y
        return pairs // width, pairs % width

    def call(self, ids: tf.RaggedTensor) -> tf.SparseTensor:
        rows, columns = self.present(ids)
        return weighted_presence(
            rows, columns, ids.nrows(out_type=tf.int64), self.feature_weights, self.width
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], self.width)

    def compute_output_spec(self, ids: keras.KerasTensor) -> keras.KerasTensor:
        return keras.KerasTensor((ids.shape[0], self.width), dtype="float32", sparse=True)


def inverse_row_norms(values: tf.Tensor, rows: tf.Tensor, batch_size: tf.Tensor) -> tf.Tensor:
    """[batch_size]: 1 / the L2 norm of each row's ``values`` (large, not inf, for an empty row,
    whose values are none, so that it stays all zero)."""
    squared_norms = tf.math.unsorted_segment_sum(tf.square(values), rows, num_segments=batch_size)
    return tf.math.rsqrt(tf.maximum(squared_norms, 1e-12))


def weighted_presence(
    rows: tf.Tensor, columns: tf.Tensor, batch_size: tf.Tensor, weights: tf.Variable, width: int
) -> tf.SparseTensor:
    """The sparse feature matrix of distinct (row, column) pairs: each present n-gram weighted,
    every row L2-normalised; a review without a known n-gram keeps an all-zero row."""
    values = tf.gather(tf.convert_to_tensor(weights), columns)
    values = values * tf.gather(inverse_row_norms(values, rows, batch_size), rows)
    return tf.SparseTensor(
        tf.stack([rows, columns], axis=1), values, tf.stack([batch_size, tf.cast(width, tf.int64)])
    )


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


@dataclass
class Featurizer:
    """The in-graph steps from review strings to the classifier's input.

    Attributes:
        vectorizer: the ``TextVectorization`` layer (strings to word ids).
        ngrams: the MLP's ``NgramFeatures`` (word ids to sparse features); None for the sepCNN,
            whose input is the word ids themselves.
    """

    vectorizer: keras.layers.TextVectorization
    ngrams: NgramFeatures | None = None

    def __call__(self, texts: tf.Tensor) -> tf.SparseTensor | tf.Tensor:
        ids = self.vectorizer(texts)
        return ids if self.ngrams is None else self.ngrams(ids)

    @property
    def vocabulary_size(self) -> int:
        """Word ids, padding and out-of-vocabulary included."""
        return self.vectorizer.vocabulary_size()


def ngram_featurizer(vocabulary: Vocabulary) -> Featurizer:
    """The n-gram MLP's featurizer: ragged word ids, then the selected n-grams' features."""
    return Featurizer(
        text_vectorization(vocabulary.words), NgramFeatures(vocabulary, name="ngram_features")
    )


def sequence_featurizer(words: list[str], sequence_length: int) -> Featurizer:
    """The sepCNN's featurizer: the first ``sequence_length`` word ids of each review, padded."""
    return Featurizer(text_vectorization(words, sequence_length))


def featurize(featurizer: Featurizer, texts: list[str]) -> tf.SparseTensor | tf.Tensor:
    """A featurizer's output for many texts, computed in batches (for training and tuning):
    sparse n-gram features in canonical order, or word-id sequences."""
    batches = [
        featurizer(tf.constant(texts[start : start + FEATURIZE_BATCH_SIZE], dtype=tf.string))
        for start in range(0, len(texts), FEATURIZE_BATCH_SIZE)
    ]
    if featurizer.ngrams is not None:
        return tf.sparse.reorder(tf.sparse.concat(axis=0, sp_inputs=batches))
    return tf.concat(batches, axis=0)
