"""Train a model family on labelled reviews, evaluate it, and export it as a new version."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from training import data as data_lib
from training.config import TrainConfig, recommend_model, samples_to_words_ratio
from training.evaluate import classification_report
from training.export import export_model
from training.model import build_classifier, build_sepcnn, build_text_model
from training.sources import DataSource
from training.vectorize import (
    Featurizer,
    featurize,
    ngram_featurizer,
    select_vocabulary,
    select_words,
    sequence_featurizer,
)

logger = logging.getLogger(__name__)

# Reviews per batch when vectorising and predicting (not a training hyper-parameter).
INFERENCE_BATCH_SIZE = 512


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced."""

    export_path: Path
    version: int
    evaluation: dict
    epochs: int
    seconds: float


def train_and_export(
    source: DataSource,
    config: TrainConfig,
    model_base_dir: str | Path,
    version: int | None = None,
    prepared: data_lib.PreparedData | None = None,
) -> TrainResult:
    """Trains with ``config``, evaluates on the validation split and exports a new version.

    Args:
        source: where the reviews come from (recorded in the export).
        config: the training settings; ``model="auto"`` is resolved from the data.
        model_base_dir: where versions live (models/imdb).
        version: the version number; the next free one when None.
        prepared: ``source`` already loaded and split (the benchmark prepares once for several
            runs); it must have been split with ``config``'s validation_fraction and seed.

    Raises:
        ValueError: the data is invalid or too small to split, or ``prepared`` was split with
            other settings than ``config``'s.
        training.export.ExportError: the export failed or breaks the serving contract.
    """
    started = time.monotonic()
    # The same seed gives the same model and metrics.
    tf.config.experimental.enable_op_determinism()
    if prepared is None:
        prepared = data_lib.prepare(source.path, config.validation_fraction, config.seed)
    elif (prepared.validation_fraction, prepared.seed) != (config.validation_fraction, config.seed):
        raise ValueError(
            f"the prepared data was split with validation_fraction={prepared.validation_fraction}"
            f", seed={prepared.seed}; the config asks for {config.validation_fraction}, "
            f"{config.seed}"
        )
    config = resolve_model(config, prepared.frame)
    split = prepared.split
    text_model, epochs = _fit(
        split.train_texts,
        split.train_labels,
        config,
        validation=(split.validation_texts, split.validation_labels),
    )
    probabilities = predict_probabilities(text_model, split.validation_texts)
    evaluation = classification_report(split.validation_labels, probabilities)
    evaluation["split"] = prepared.summary()
    evaluation["data"] = source.describe()
    evaluation["epochs"] = epochs
    if config.refit_on_all_data:
        frame = prepared.frame
        logger.info("Refitting on all %d reviews for %d epoch(s)", len(frame), epochs)
        text_model, _ = _fit(
            frame[data_lib.REVIEW_COLUMN].tolist(),
            frame[data_lib.LABEL_COLUMN].to_numpy(np.float32),
            config,
            epochs=epochs,
        )
        evaluation["exported_model"] = (
            f"refit on all {len(frame)} reviews for {epochs} epochs; the metrics above are "
            f"those of the same recipe trained on the {len(split.train)} training reviews"
        )
    else:
        evaluation["exported_model"] = f"trained on the {len(split.train)} training reviews"

    export_path = export_model(
        text_model,
        model_base_dir,
        version=version,
        extra_files={
            "training_config.json": config.to_dict()
            | {"data": str(source.path), "data_origin": source.origin},
            "evaluation.json": evaluation,
        },
    )
    return TrainResult(
        export_path=export_path,
        version=int(export_path.name),
        evaluation=evaluation,
        epochs=epochs,
        seconds=time.monotonic() - started,
    )


def resolve_model(config: TrainConfig, frame: pd.DataFrame) -> TrainConfig:
    """``model="auto"`` becomes "mlp" or "sepcnn" by the samples / words-per-sample ratio."""
    if config.model != "auto":
        return config
    median_words = float(np.median(data_lib.words_per_sample(frame[data_lib.REVIEW_COLUMN])))
    ratio = samples_to_words_ratio(len(frame), median_words)
    family = recommend_model(ratio)
    logger.info(
        "Model auto: %d samples / %.0f median words per sample = ratio %.1f -> %s",
        len(frame),
        median_words,
        ratio,
        family,
    )
    return config.replace(model=family)


def _fit(
    texts: list[str],
    labels: np.ndarray,
    config: TrainConfig,
    validation: tuple[list[str], np.ndarray] | None = None,
    epochs: int | None = None,
) -> tuple[keras.Model, int]:
    """Builds the featurizer on ``texts``, trains the classifier, and returns the text model.

    With ``validation``, trains up to ``config.max_epochs`` with early stopping on validation
    loss and returns the best epoch count; otherwise trains exactly ``epochs`` epochs.
    """
    keras.utils.set_random_seed(config.seed)
    features = build_features(texts, labels, config)
    validation_features = None
    if validation is not None:
        validation_features = (featurize(features, validation[0]), validation[1])
    classifier, best_epochs = fit_classifier(
        featurize(features, texts), labels, features, config, validation_features, epochs
    )
    return build_text_model(features, classifier), best_epochs


def build_features(texts: list[str], labels: np.ndarray, config: TrainConfig) -> Featurizer:
    """The featurizer of ``config.model``, with its vocabulary selected on ``texts`` only."""
    if config.model == "sepcnn":
        words = select_words(texts, config.sepcnn_max_words)
        return sequence_featurizer(words, config.sepcnn_sequence_length)
    vocabulary = select_vocabulary(
        texts,
        labels,
        ngram_max=config.ngram_max,
        max_features=config.max_features,
        min_document_frequency=config.min_document_frequency,
        weighting=config.weighting,
    )
    return ngram_featurizer(vocabulary)


def fit_classifier(
    inputs: tf.Tensor | tf.SparseTensor,
    labels: np.ndarray,
    features: Featurizer,
    config: TrainConfig,
    validation: tuple[tf.Tensor | tf.SparseTensor, np.ndarray] | None = None,
    epochs: int | None = None,
) -> tuple[keras.Model, int]:
    """Trains the classifier on featurised reviews; the same seed gives the same weights.

    With ``validation``, early stopping on validation loss restores the best weights, and the
    best epoch count is returned; otherwise exactly ``epochs`` epochs are trained.
    """
    keras.utils.set_random_seed(config.seed)
    if features.ngrams is None:
        classifier = build_sepcnn(features.vocabulary_size, config)
    else:
        classifier = build_classifier(features.ngrams.width, config)
    dataset = (
        tf.data.Dataset.from_tensor_slices((inputs, labels))
        .shuffle(len(labels), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    fit_options: dict = {"epochs": epochs or config.max_epochs}
    if validation is not None:
        fit_options["validation_data"] = tf.data.Dataset.from_tensor_slices(validation).batch(
            INFERENCE_BATCH_SIZE
        )
        fit_options["callbacks"] = [
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            )
        ]
    history = classifier.fit(
        dataset,
        # The tf.data pipeline above shuffles; Keras cannot shuffle a dataset itself.
        shuffle=False,
        # A progress bar on a terminal, one line per epoch in logs and CI.
        verbose=1 if sys.stdout.isatty() else 2,
        **fit_options,
    )
    if validation is not None:
        return classifier, int(np.argmin(history.history["val_loss"])) + 1
    return classifier, len(history.history["loss"])


def predict_probabilities(text_model: keras.Model, texts: list[str]) -> np.ndarray:
    """Probability of a positive review for each text, through the whole in-graph pipeline."""
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, dtype=tf.string))
    return text_model.predict(dataset.batch(INFERENCE_BATCH_SIZE), verbose=0).reshape(-1)
