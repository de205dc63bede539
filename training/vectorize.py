"""Tokenisation, n-gram vocabulary selection and the in-graph TF-IDF vectoriser.

The vocabulary and IDF weights are computed outside the graph with scikit-learn, so that the
feature selection the design notes ask for (ANOVA F-value, top k) is possible; the result is
handed to a Keras ``TextVectorization`` layer that runs the same standardisation, whitespace split
and n-gram join inside the exported graph. Both sides tokenise through ``standardize`` below, and a
test checks that they produce the same n-gram counts.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.feature_selection import f_classif

logger = logging.getLogger(__name__)

# IMDB reviews carry HTML line breaks such as "<br />"; they separate words.
HTML_BREAK_PATTERN = r"<\s*br\s*/?\s*>"
# Apostrophes are dropped so that "don't" and "dont" are one token.
APOSTROPHE_PATTERN = r"['’`]"
# Anything that is neither a letter, a digit nor whitespace separates words.
NON_WORD_PATTERN = r"[^\pL\pN\s]"
# Runs of whitespace collapse to one space, so a split on " " equals Python's str.split().
WHITESPACE_PATTERN = r"\s+"
# How many texts standardize_texts sends through the graph function at once.
STANDARDIZE_BATCH_SIZE = 4096


@keras.saving.register_keras_serializable(package="imdb")
def standardize(texts: tf.Tensor) -> tf.Tensor:
    """Lower-cases, turns ``<br />`` and punctuation into spaces and collapses whitespace.

    Only standard TensorFlow string ops, so the exported graph runs in ``tensorflow/serving``.
    """
    texts = tf.strings.lower(texts, encoding="utf-8")
    texts = tf.strings.regex_replace(texts, HTML_BREAK_PATTERN, " ")
    texts = tf.strings.regex_replace(texts, APOSTROPHE_PATTERN, "")
    texts = tf.strings.regex_replace(texts, NON_WORD_PATTERN, " ")
    texts = tf.strings.regex_replace(texts, WHITESPACE_PATTERN, " ")
    return tf.strings.strip(texts)


def standardize_texts(texts: list[str]) -> list[str]:
    """Runs ``standardize`` eagerly over Python strings (for the scikit-learn side)."""
    result: list[str] = []
    for start in range(0, len(texts), STANDARDIZE_BATCH_SIZE):
        batch = tf.constant(texts[start : start + STANDARDIZE_BATCH_SIZE], dtype=tf.string)
        result.extend(value.decode("utf-8") for value in standardize(batch).numpy())
    return result


def whitespace_tokens(text: str) -> list[str]:
    """Splits a standardised text the way ``TextVectorization(split="whitespace")`` does."""
    return text.split(" ") if text else []


@dataclass(frozen=True)
class Vocabulary:
    """The selected n-grams and their IDF weights, in the vectoriser's column order."""

    ngrams: list[str]
    idf_weights: np.ndarray
    ngram_range: tuple[int, int]

    def __len__(self) -> int:
        return len(self.ngrams)


def select_vocabulary(
    texts: list[str],
    labels: np.ndarray,
    ngram_range: tuple[int, int] = (1, 2),
    max_features: int = 20_000,
    min_document_frequency: int = 2,
) -> Vocabulary:
    """Chooses the ``max_features`` n-grams with the highest ANOVA F-value on these texts.

    Args:
        texts: raw training reviews (never the validation ones: that would leak).
        labels: 0/1 targets of ``texts``.
        ngram_range: smallest and largest n-gram length.
        max_features: how many n-grams to keep.
        min_document_frequency: n-grams in fewer training reviews are dropped first.

    Returns:
        The n-grams, best first, with smoothed IDF weights ``ln((1 + n) / (1 + df)) + 1``.
    """
    if ngram_range[0] != 1:
        # TextVectorization(ngrams=k) always emits every length from 1 to k.
        raise ValueError(f"ngram_range must start at 1, got {ngram_range}")
    counter = CountVectorizer(
        tokenizer=whitespace_tokens,
        token_pattern=None,
        lowercase=False,
        ngram_range=ngram_range,
        min_df=min_document_frequency,
        dtype=np.float32,
    )
    counts = counter.fit_transform(standardize_texts(texts))
    if counts.shape[1] == 0:
        raise ValueError(
            f"no n-gram occurs in {min_document_frequency} or more training reviews; "
            "lower min_document_frequency or provide more data"
        )
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # Perfectly separating n-grams divide by a zero within-class variance (score inf) and
        # constant ones give NaN; both are expected on small data.
        warnings.simplefilter("ignore", UserWarning)
        scores, _ = f_classif(counts, labels)
    # Constant features carry no information; perfect separators rank first.
    scores = np.nan_to_num(scores, nan=0.0, posinf=np.finfo(np.float64).max)
    # Stable sort on (-score, name) so that the same data gives the same vocabulary.
    names = counter.get_feature_names_out()
    order = np.lexsort((names, -scores))[:max_features]
    selected = counts[:, order]
    document_frequency = np.asarray((selected > 0).sum(axis=0)).ravel()
    num_documents = counts.shape[0]
    idf = np.log((1.0 + num_documents) / (1.0 + document_frequency)) + 1.0
    logger.info(
        "Selected %d of %d n-grams (min_df=%d, n-grams %s)",
        len(order),
        counts.shape[1],
        min_document_frequency,
        ngram_range,
    )
    return Vocabulary(names[order].tolist(), idf.astype(np.float32), ngram_range)


def build_vectorizer(vocabulary: Vocabulary) -> keras.layers.TextVectorization:
    """A TF-IDF ``TextVectorization`` layer over the given vocabulary.

    Column 0 is the out-of-vocabulary bucket, followed by ``vocabulary.ngrams`` in order.
    """
    return keras.layers.TextVectorization(
        standardize=standardize,
        split="whitespace",
        ngrams=vocabulary.ngram_range[1],
        output_mode="tf_idf",
        vocabulary=vocabulary.ngrams,
        idf_weights=vocabulary.idf_weights,
        name="tfidf_vectorizer",
    )
