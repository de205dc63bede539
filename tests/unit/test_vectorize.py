"""The scikit-learn side and the in-graph featurizer must tokenise identically."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.feature_extraction.text import CountVectorizer

from training.vectorize import (
    Vocabulary,
    featurize,
    ngram_featurizer,
    ngram_presence,
    select_vocabulary,
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
    "rock ' n ' roll, isn't it",
]


def test_standardize_strips_html_breaks_punctuation_and_case():
    assert [whitespace_tokens(text) for text in standardize_texts(TRICKY_TEXTS[:2])] == [
        ["great", "movie", "i", "loved", "it", "dont", "miss"],
        ["ça", "été", "très", "bien", "10", "10", "wasnt", "it"],
    ]


@pytest.mark.parametrize("ngram_max", [1, 2, 3])
def test_in_graph_ngrams_equal_scikit_learn_ngrams(ngram_max):
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    vocabulary = select_vocabulary(
        TRICKY_TEXTS, labels, ngram_max=ngram_max, max_features=1000, min_document_frequency=1
    )
    in_graph = tf.sparse.to_dense(featurize(ngram_featurizer(vocabulary), TRICKY_TEXTS)).numpy()
    # Column 0 of the featurizer is the out-of-vocabulary bucket.
    np.testing.assert_array_equal(
        in_graph[:, 1:] != 0, scikit_learn_presence(vocabulary, TRICKY_TEXTS)
    )


def scikit_learn_presence(vocabulary, texts: list[str]) -> np.ndarray:
    return (
        CountVectorizer(
            tokenizer=whitespace_tokens,
            token_pattern=None,
            lowercase=False,
            ngram_range=(1, vocabulary.ngram_max),
            vocabulary=vocabulary.ngrams,
            binary=True,
        )
        .transform(standardize_texts(texts))
        .toarray()
        != 0
    )


@pytest.mark.parametrize(("ngram_max", "min_document_frequency"), [(1, 1), (2, 2), (3, 1), (4, 2)])
def test_ngram_presence_is_scikit_learns_count_vectorizer(ngram_max, min_document_frequency):
    texts = [
        *TRICKY_TEXTS,
        "a a a a",  # one n-gram many times in one review
        "a",  # shorter than every n-gram but the unigram
        "bad bad film",
        "great movie i loved it",
        "the end",
    ]
    documents = [whitespace_tokens(text) for text in standardize_texts(texts)]
    presence, names = ngram_presence(documents, ngram_max, min_document_frequency)
    counter = CountVectorizer(
        tokenizer=whitespace_tokens,
        token_pattern=None,
        lowercase=False,
        ngram_range=(1, ngram_max),
        min_df=min_document_frequency,
        binary=True,
    )
    expected = counter.fit_transform(standardize_texts(texts)).toarray()
    assert sorted(names) == counter.get_feature_names_out().tolist()
    order = np.argsort(names)
    np.testing.assert_array_equal(presence.toarray()[:, order], expected)
    assert presence.dtype == np.float32


def test_ngram_presence_of_no_words():
    presence, names = ngram_presence([[], []], 3, 1)
    assert presence.shape == (2, 0) and names.tolist() == []
    presence, names = ngram_presence([], 3, 1)
    assert presence.shape == (0, 0)


def test_ngrams_skip_no_unknown_word_and_never_span_two_reviews():
    # Every word of the vocabulary's n-grams: good, film, bad, plot, very.
    vocabulary = Vocabulary(
        ["good film", "good", "bad plot", "very good film", "film"], np.ones(5, np.float32), 3, "nb"
    )
    texts = [
        "good zzz film",  # an unknown word inside: no "good film"
        "very good",  # the batch's next review starts with "film": no "very good film"
        "film",  # a one-word review
        "bad, plot! Very GOOD film.",
        "",  # an empty review
        "zzz yyy",  # unknown words only: an all-zero row
        "good",
    ]
    features = featurize(ngram_featurizer(vocabulary), texts)
    in_graph = tf.sparse.to_dense(features).numpy()
    np.testing.assert_array_equal(in_graph[:, 1:] != 0, scikit_learn_presence(vocabulary, texts))
    assert in_graph[0, 1:].nonzero()[0].tolist() == [1, 4]  # "good", "film"; not "good film"
    assert not in_graph[4].any() and not in_graph[5].any()


def test_an_empty_batch_gives_an_empty_feature_matrix():
    vocabulary = Vocabulary(["good", "good film"], np.ones(2, np.float32), 2, "nb")
    features = ngram_featurizer(vocabulary)(tf.constant([], dtype=tf.string))
    assert features.dense_shape.numpy().tolist() == [0, 3]
    assert features.values.shape == (0,)


def test_word_vocabulary_covers_every_word_of_every_ngram():
    vocabulary = Vocabulary(["b c", "a", "c d e", "a b"], np.ones(4, np.float32), 3, "nb")
    assert vocabulary.words == ["b", "c", "a", "d", "e"]


def test_selection_prefers_discriminative_ngrams():
    texts = [f"great film number {i}" for i in range(20)] + [
        f"awful film number {i}" for i in range(20)
    ]
    labels = np.array([1] * 20 + [0] * 20)
    vocabulary = select_vocabulary(texts, labels, max_features=2, min_document_frequency=2)
    # Only n-grams that separate the classes perfectly; "film" and "number" occur in both.
    assert len(vocabulary) == 2
    assert all("great" in ngram or "awful" in ngram for ngram in vocabulary.ngrams)


def test_naive_bayes_weights_point_to_the_class():
    texts = ["good plot", "good film", "bad plot", "bad film"]
    vocabulary = select_vocabulary(
        texts, np.array([1, 1, 0, 0]), ngram_max=1, max_features=10, min_document_frequency=1
    )
    weight = dict(zip(vocabulary.ngrams, vocabulary.weights, strict=True))
    assert weight["good"] > 0 > weight["bad"]
    assert weight["plot"] == pytest.approx(0.0, abs=1e-6)


def test_features_are_weighted_presence_with_unit_norm():
    texts = ["good good plot", "bad plot", "good film", "bad film"]
    vocabulary = select_vocabulary(
        texts,
        np.array([1, 0, 1, 0]),
        ngram_max=1,
        max_features=10,
        min_document_frequency=1,
        weighting="idf",
    )
    rows = tf.sparse.to_dense(
        featurize(ngram_featurizer(vocabulary), ["good good plot", "zzz"])
    ).numpy()
    assert np.linalg.norm(rows[0]) == pytest.approx(1.0, abs=1e-6)
    good, plot = 1 + vocabulary.ngrams.index("good"), 1 + vocabulary.ngrams.index("plot")
    idf = dict(zip(vocabulary.ngrams, vocabulary.weights, strict=True))
    # Presence, not counts: "good" twice weighs as much as once.
    assert rows[0, good] / rows[0, plot] == pytest.approx(idf["good"] / idf["plot"], rel=1e-5)
    assert not rows[1].any()  # no known n-gram: an all-zero row, not NaN
