"""The scikit-learn side and the in-graph vectoriser must tokenise identically."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from sklearn.feature_extraction.text import CountVectorizer

from training.vectorize import (
    build_vectorizer,
    select_vocabulary,
    standardize,
    standardize_texts,
    whitespace_tokens,
)

TRICKY_TEXTS = [
    "Great movie!<br /><br />I LOVED it. Don't miss",
    "Ça été  très\u00a0bien — 10/10, wasn’t it?",
    "",
    "   ",
    "a\tb\nc  d",
    "Über-cool film's end: Bad... bad!!<BR/>x",
    "word.next,other",
]


def test_standardize_strips_html_breaks_punctuation_and_case():
    assert standardize_texts(TRICKY_TEXTS[:2]) == [
        "great movie i loved it dont miss",
        "ça été très bien 10 10 wasnt it",
    ]


def test_in_graph_ngram_counts_equal_scikit_learn_counts():
    labels = np.array([1, 0, 1, 0, 1, 0, 1])
    vocabulary = select_vocabulary(
        TRICKY_TEXTS, labels, max_features=1000, min_document_frequency=1
    )
    counts_in_graph = keras.layers.TextVectorization(
        standardize=standardize,
        split="whitespace",
        ngrams=2,
        output_mode="count",
        vocabulary=vocabulary.ngrams,
    )(tf.constant(TRICKY_TEXTS)).numpy()
    counts_sklearn = CountVectorizer(
        tokenizer=whitespace_tokens,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, 2),
        vocabulary=vocabulary.ngrams,
    ).transform(standardize_texts(TRICKY_TEXTS))
    # Column 0 of the layer is the out-of-vocabulary bucket.
    np.testing.assert_array_equal(counts_in_graph[:, 1:], counts_sklearn.toarray())


def test_selection_prefers_discriminative_ngrams():
    texts = [f"great film number {i}" for i in range(20)] + [
        f"awful film number {i}" for i in range(20)
    ]
    labels = np.array([1] * 20 + [0] * 20)
    vocabulary = select_vocabulary(texts, labels, max_features=2, min_document_frequency=2)
    # Only n-grams that separate the classes perfectly; "film" and "number" occur in both.
    assert len(vocabulary) == 2
    assert all("great" in ngram or "awful" in ngram for ngram in vocabulary.ngrams)


def test_tfidf_layer_weights_counts_by_idf():
    texts = ["good good plot", "bad plot", "good film", "bad film"]
    vocabulary = select_vocabulary(
        texts, np.array([1, 0, 1, 0]), max_features=10, min_document_frequency=1
    )
    layer = build_vectorizer(vocabulary)
    row = layer(tf.constant(["good good"])).numpy()[0]
    column = 1 + vocabulary.ngrams.index("good")
    assert row[column] == np.float32(2 * vocabulary.idf_weights[vocabulary.ngrams.index("good")])
