"""Train the n-gram MLP on labelled reviews, evaluate it, and export it as a new version."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from training import data as data_lib
from training.config import TrainConfig
from training.evaluate import classification_report
from training.explore import recommend_model, samples_to_words_ratio, words_per_sample
from training.export import export_model
from training.model import build_classifier, build_sepcnn, build_text_model
from training.sources import DataSource
from training.vectorize import (
    NgramFeatures,
    SequenceFeatures,
    featurize,
    select_vocabulary,
    select_words,
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
    source: DataSource, config: TrainConfig, model_base_dir: str | Path, version: int | None = None
) -> TrainResult:
    """Loads ``source``, trains with ``config``, evaluates on the validation split and exports.

    Raises:
        ValueError: the data is invalid or too small to split.
        training.export.ExportError: the export failed or breaks the serving contract.
    """
    started = time.monotonic()
    # The same seed gives the same model and metrics.
    tf.config.experimental.enable_op_determinism()
    frame = data_lib.load_reviews(source.path)
    duplicates = data_lib.find_duplicates(frame)
    frame = data_lib.drop_duplicates(frame)
    config = resolve_model(config, frame)
    split = data_lib.split_train_validation(frame, config.validation_fraction, config.seed)
    logger.info(
        "Data: %d reviews after dropping %s; %d train / %d validation%s",
        len(frame),
        duplicates,
        len(split.train),
        len(split.validation),
        f", grouped by {split.grouped_by}" if split.grouped_by else "",
    )

    train_texts = split.train[data_lib.REVIEW_COLUMN].tolist()
    train_labels = split.train[data_lib.LABEL_COLUMN].to_numpy(np.float32)
    validation_texts = split.validation[data_lib.REVIEW_COLUMN].tolist()
    validation_labels = split.validation[data_lib.LABEL_COLUMN].to_numpy(np.float32)

    text_model, epochs = _fit(
        train_texts, train_labels, config, validation=(validation_texts, validation_labels)
    )
    probabilities = predict_probabilities(text_model, validation_texts)
    evaluation = classification_report(validation_labels, probabilities)
    evaluation["split"] = {
        "train": len(train_texts),
        "validation": len(validation_texts),
        "grouped_by": split.grouped_by,
        "duplicates_dropped": duplicates.duplicate_rows,
    }
    evaluation["data"] = source.describe()
    evaluation["epochs"] = epochs
    if config.refit_on_all_data:
        logger.info("Refitting on all %d reviews for %d epoch(s)", len(frame), epochs)
        text_model, _ = _fit(
            frame[data_lib.REVIEW_COLUMN].tolist(),
            frame[data_lib.LABEL_COLUMN].to_numpy(np.float32),
            config,
            epochs=epochs,
        )
        evaluation["exported_model"] = (
            f"refit on all {len(frame)} reviews for {epochs} epochs; the metrics above are "
            f"those of the same recipe trained on the {len(train_texts)} training reviews"
        )
    else:
        evaluation["exported_model"] = f"trained on the {len(train_texts)} training reviews"

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


def resolve_model(config: TrainConfig, frame) -> TrainConfig:
    """``model="auto"`` becomes "mlp" or "sepcnn" by the samples / words-per-sample ratio."""
    if config.model != "auto":
        return config
    median_words = float(np.median(words_per_sample(frame[data_lib.REVIEW_COLUMN])))
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


def build_features(
    texts: list[str], labels: np.ndarray, config: TrainConfig
) -> NgramFeatures | SequenceFeatures:
    """The featurizer of ``config.model``, with its vocabulary selected on ``texts`` only."""
    if config.model == "sepcnn":
        words = select_words(texts, config.sepcnn_max_words)
        return SequenceFeatures(words, config.sepcnn_sequence_length, name="sequence_features")
    vocabulary = select_vocabulary(
        texts,
        labels,
        ngram_max=config.ngram_max,
        max_features=config.max_features,
        min_document_frequency=config.min_document_frequency,
        weighting=config.weighting,
    )
    return NgramFeatures(vocabulary, name="ngram_features")


def fit_classifier(
    inputs: tf.Tensor | tf.SparseTensor,
    labels: np.ndarray,
    features: NgramFeatures | SequenceFeatures,
    config: TrainConfig,
    validation: tuple[tf.Tensor | tf.SparseTensor, np.ndarray] | None = None,
    epochs: int | None = None,
) -> tuple[keras.Model, int]:
    """Trains the classifier on featurised reviews; the same seed gives the same weights.

    With ``validation``, early stopping on validation loss restores the best weights, and the
    best epoch count is returned; otherwise exactly ``epochs`` epochs are trained.
    """
    keras.utils.set_random_seed(config.seed)
    if isinstance(features, SequenceFeatures):
        classifier = build_sepcnn(features.vocabulary_size, config)
    else:
        classifier = build_classifier(features.width, config)
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
