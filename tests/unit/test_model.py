"""The model families at initialisation: shapes, and a signal that reaches the output."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.config import TrainConfig
from training.model import build_sepcnn, depthwise_initializer


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
