"""The n-gram MLP: raw review strings in, probability of a positive review out."""

from __future__ import annotations

import keras

from serving.contract import INPUT_KEY
from training.config import TrainConfig
from training.vectorize import NgramFeatures


def build_classifier(num_features: int, config: TrainConfig) -> keras.Model:
    """The MLP over sparse weighted n-gram features, as the design notes plan it.

    ``num_layers`` Dense layers (ReLU hidden layers each followed by dropout, a sigmoid output),
    binary cross-entropy and Adam. The input is sparse: the first layer multiplies the sparse
    feature matrix directly (dropout on a 100k-wide sparse input would need a custom op).
    """
    features = keras.Input(shape=(num_features,), sparse=True, name="ngram_features")
    hidden = features
    for index in range(config.num_layers - 1):
        hidden = keras.layers.Dense(config.hidden_units, activation="relu", name=f"dense_{index}")(
            hidden
        )
        hidden = keras.layers.Dropout(config.dropout_rate, name=f"dropout_{index}")(hidden)
    probability = keras.layers.Dense(1, activation="sigmoid", name="probability")(hidden)
    model = keras.Model(features, probability, name="ngram_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_text_model(features: NgramFeatures, classifier: keras.Model) -> keras.Model:
    """Chains the in-graph featurizer and the trained classifier: strings in, [-1, 1] out."""
    reviews = keras.Input(shape=(), dtype="string", name=INPUT_KEY)
    return keras.Model(reviews, classifier(features(reviews)), name="imdb_sentiment")
