"""The model families at initialisation: shapes, a signal that reaches the output, and the
served MLP equal to the trained one."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from training.config import TrainConfig
from training.model import build_classifier, build_sepcnn, build_text_model, depthwise_initializer
from training.vectorize import featurize, ngram_featurizer, select_vocabulary


def _activations(model: keras.Model, inputs: np.ndarray, layer_names: list[str]) -> list:
    probe = keras.Model(model.input, [model.get_layer(name).output for name in layer_names])
    return [np.asarray(output) for output in probe(inputs, training=False)]


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_sepcnn_keeps_the_signal_scale_from_embedding_to_output(blocks):
    """Before the fix, two blocks shrank it ~1,000-fold and the model sat at chance on IMDB."""
    config = TrainConfig(model="sepcnn", sepcnn_blocks=blocks, sepcnn_sequence_length=200)
    keras.utils.set_random_seed(0)
    model = build_sepcnn(vocabulary_size=5_000, config=config)
    word_ids = np.random.default_rng(0).integers(2, 5_000, size=(64, 200))

    embedded, pooled = _activations(model, word_ids, ["embedding", "average"])

    ratio = pooled.std() / embedded.std()
    assert 0.1 < ratio < 10, f"signal scale changed {ratio:.2g}-fold through {blocks} block(s)"


def test_depthwise_initializer_gives_each_filter_variance_one_over_kernel_size():
    kernel = np.asarray(depthwise_initializer(64)(shape=(3, 64, 1)))
    # Uniform(-a, a) has variance a^2 / 3; with a^2 = 3 / kernel_size that is 1 / kernel_size.
    assert kernel.var() == pytest.approx(1 / 3, rel=0.15)
    assert np.abs(kernel).max() <= 1.0


def test_sepcnn_outputs_one_probability_per_review():
    config = TrainConfig(model="sepcnn", sepcnn_sequence_length=50)
    model = build_sepcnn(vocabulary_size=100, config=config)
    probabilities = np.asarray(model(np.zeros((4, 50), dtype=np.int64)))
    assert probabilities.shape == (4, 1)
    assert ((probabilities > 0) & (probabilities < 1)).all()


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_the_served_mlp_folds_its_first_layer_without_changing_a_prediction(num_layers):
    texts = ["good film", "bad plot", "very good film", "bad bad film", "plot", "dull"] * 3
    labels = np.array([1, 0, 1, 0, 1, 0] * 3)
    featurizer = ngram_featurizer(
        select_vocabulary(texts, labels, max_features=20, min_document_frequency=1)
    )
    keras.utils.set_random_seed(0)
    classifier = build_classifier(
        featurizer.ngrams.width, TrainConfig(num_layers=num_layers, hidden_units=8)
    )
    first = next(layer for layer in classifier.layers if isinstance(layer, keras.layers.Dense))
    first.bias.assign(np.linspace(-0.5, 0.5, first.units))
    reviews = ["Good film, very good.", "bad", "", "unknown words only", "plot plot plot"]

    served = build_text_model(featurizer, classifier)
    assert f"folded_{first.name}" in [layer.name for layer in served.layers]
    expected = np.asarray(classifier(featurize(featurizer, reviews), training=False))
    actual = np.asarray(served(tf.constant(reviews), training=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
    # Reviews without a known n-gram get the first layer's bias alone, as Keras gives them.
    assert actual[2] == pytest.approx(actual[3])
