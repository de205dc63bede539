"""The n-gram MLP: raw review strings in, probability of a positive review out."""

from __future__ import annotations

import keras

from serving.contract import INPUT_KEY
from training.config import TrainConfig


def build_classifier(num_features: int, config: TrainConfig) -> keras.Model:
    """The MLP over TF-IDF features, as the design notes plan it.

    L2-normalised TF-IDF, then dropout before each of ``num_layers`` Dense layers (ReLU hidden
    layers, a sigmoid output), binary cross-entropy and Adam.
    """
    features = keras.Input(shape=(num_features,), name="tfidf")
    hidden = keras.layers.UnitNormalization(name="l2_normalize")(features)
    for index in range(config.num_layers - 1):
        hidden = keras.layers.Dropout(config.dropout_rate, name=f"dropout_{index}")(hidden)
        hidden = keras.layers.Dense(config.hidden_units, activation="relu", name=f"dense_{index}")(
            hidden
        )
    hidden = keras.layers.Dropout(config.dropout_rate, name="dropout_output")(hidden)
    probability = keras.layers.Dense(1, activation="sigmoid", name="probability")(hidden)
    model = keras.Model(features, probability, name="ngram_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="binary_crossentropy",
        metrics=["accuracy"],
    )
    return model


def build_text_model(
    vectorizer: keras.layers.TextVectorization, classifier: keras.Model
) -> keras.Model:
    """Chains the in-graph vectoriser and the trained classifier: strings in, shape [-1, 1] out."""
    reviews = keras.Input(shape=(), dtype="string", name=INPUT_KEY)
    return keras.Model(reviews, classifier(vectorizer(reviews)), name="imdb_sentiment")
