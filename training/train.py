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
from training.export import export_model
from training.model import build_classifier, build_text_model
from training.sources import DataSource
from training.vectorize import build_vectorizer, select_vocabulary

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
    frame = data_lib.load_reviews(source.path)
    duplicates = data_lib.find_duplicates(frame)
    frame = data_lib.drop_duplicates(frame)
    split = data_lib.split_train_validation(frame, config.validation_fraction, config.seed)
    logger.info(
        "Data: %d reviews after dropping %s; %d train / %d validation%s",
        len(frame),
        duplicates,
        len(split.train),
        len(split.validation),
        f", grouped by {split.grouped_by}" if split.grouped_by else "",
    )

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()

    train_texts = split.train[data_lib.REVIEW_COLUMN].tolist()
    train_labels = split.train[data_lib.LABEL_COLUMN].to_numpy(np.float32)
    validation_texts = split.validation[data_lib.REVIEW_COLUMN].tolist()
    validation_labels = split.validation[data_lib.LABEL_COLUMN].to_numpy(np.float32)

    vocabulary = select_vocabulary(
        train_texts,
        train_labels,
        ngram_range=(1, config.ngram_max),
        max_features=config.max_features,
        min_document_frequency=config.min_document_frequency,
    )
    vectorizer = build_vectorizer(vocabulary)
    train_features = _feature_dataset(vectorizer, train_texts, train_labels)
    validation_features = _feature_dataset(vectorizer, validation_texts, validation_labels)

    classifier = build_classifier(vectorizer.vocabulary_size(), config)
    history = classifier.fit(
        train_features.unbatch()
        # unbatch() forgets the length; Keras needs it to know where an epoch ends.
        .apply(tf.data.experimental.assert_cardinality(len(train_texts)))
        .shuffle(len(train_texts), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(tf.data.AUTOTUNE),
        validation_data=validation_features,
        epochs=config.max_epochs,
        # The tf.data pipeline above shuffles; Keras cannot shuffle a dataset itself.
        shuffle=False,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=config.early_stopping_patience,
                restore_best_weights=True,
            )
        ],
        # A progress bar on a terminal, one line per epoch in logs and CI.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    epochs = len(history.history["loss"])

    text_model = build_text_model(vectorizer, classifier)
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


def predict_probabilities(text_model: keras.Model, texts: list[str]) -> np.ndarray:
    """Probability of a positive review for each text, through the whole in-graph pipeline."""
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(texts, dtype=tf.string))
    return text_model.predict(dataset.batch(INFERENCE_BATCH_SIZE), verbose=0).reshape(-1)


def _feature_dataset(
    vectorizer: keras.layers.TextVectorization, texts: list[str], labels: np.ndarray
) -> tf.data.Dataset:
    """(TF-IDF features, label) batches, vectorised once and cached in memory."""
    dataset = tf.data.Dataset.from_tensor_slices((tf.constant(texts, dtype=tf.string), labels))
    return (
        dataset.batch(INFERENCE_BATCH_SIZE)
        # Sequential map: it runs once (then the cache serves), and a parallel map is rewritten
        # under op determinism with a noisy warning.
        .map(lambda text, label: (vectorizer(text), label))
        .cache()
    )
