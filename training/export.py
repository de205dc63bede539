"""Export a trained text model as a new numeric SavedModel version for TF Serving.

This module is the only writer of model versions. A version is written into a hidden,
non-numeric sibling folder (TF Serving ignores non-numeric names), verified by loading it the
way TF Serving does, and only then renamed to ``<base>/<version>``: a server polling the base
path never sees half a version, and an interrupted export leaves no numeric folder behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from serving.contract import (
    DECISION_THRESHOLD,
    INPUT_KEY,
    MODEL_NAME,
    NEGATIVE_LABEL,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITY,
    POSITIVE_LABEL,
    SIGNATURE_NAME,
    WARMUP_FILE,
)
from serving.export_check import ExportCheckError, check_export
from serving.versions import latest_version

logger = logging.getLogger(__name__)

# Staging folders are named .export-<version>-<pid>; the leading dot and the text make TF
# Serving (and our local server) ignore them.
STAGING_PATTERN = re.compile(r"^\.export-(\d+)-(\d+)$")
# Reviews replayed by TF Serving before a version becomes AVAILABLE (first-request latency).
WARMUP_REVIEWS = (
    "A wonderful, moving film with brilliant acting. I loved every minute of it.",
    "Dull, predictable and far too long. The worst film I have seen this year.",
    "It was fine.",
)
# TF Serving replays every record --num_request_iterations_for_warmup times; a few suffice.
WARMUP_RECORDS = 2
# Parts a large batch is cut into, run on separate cores (the pods have 2 CPUs), and the
# smallest batch that is cut (see make_serving_function; measured in `make bench-graph`).
SERVING_SHARDS = 2
MIN_SHARDED_BATCH = 16


class ExportError(Exception):
    """The export could not be written or does not meet the serving contract."""


def lookup_tables(model: keras.Model) -> list[tf.lookup.StaticHashTable]:
    """The hash tables (vocabularies) anywhere inside ``model``."""
    return [
        obj
        for obj in tf.train.TrackableView(model).descendants()
        if isinstance(obj, tf.lookup.StaticHashTable)
    ]


def make_serving_function(
    text_model: keras.Model, shards: int = SERVING_SHARDS
) -> tf.types.experimental.GenericFunction:
    """The ``serving_default`` function: review strings [-1] to probability and label [-1].

    A batch of ``MIN_SHARDED_BATCH`` reviews or more is cut into ``shards`` parts that run
    through the model side by side: they share no op, so the session (TF Serving's too) runs
    them on separate cores, and one request uses the pod's 2 CPUs. ``shards=1`` never cuts.
    """

    def probabilities(reviews: tf.Tensor) -> tf.Tensor:
        return tf.reshape(text_model(reviews, training=False), [-1])

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_KEY)])
    def serve(review: tf.Tensor) -> dict[str, tf.Tensor]:
        size = tf.shape(review)[0]

        def sharded() -> tf.Tensor:
            bounds = [size * shard // shards for shard in range(shards + 1)]
            parts = [review[bounds[i] : bounds[i + 1]] for i in range(shards)]
            return tf.concat([probabilities(part) for part in parts], axis=0)

        def whole() -> tf.Tensor:
            # An empty batch gets empty outputs without running the model: some kernels (the
            # sepCNN's depthwise convolution) reject a batch of zero.
            return tf.cond(
                size > 0, lambda: probabilities(review), lambda: tf.zeros([0], tf.float32)
            )

        probability = tf.cond(size >= MIN_SHARDED_BATCH, sharded, whole) if shards > 1 else whole()
        label = tf.where(
            probability >= DECISION_THRESHOLD,
            tf.constant(POSITIVE_LABEL),
            tf.constant(NEGATIVE_LABEL),
        )
        return {OUTPUT_PROBABILITY: probability, OUTPUT_LABEL: label}

    return serve


def export_model(
    text_model: keras.Model,
    base_dir: str | Path,
    version: int | None = None,
    extra_files: dict[str, dict] | None = None,
    shards: int = SERVING_SHARDS,
) -> Path:
    """Writes ``text_model`` as ``<base_dir>/<version>/`` and returns that path.

    Args:
        text_model: a Keras model from raw review strings to a [-1, 1] probability.
        base_dir: the model base path TF Serving polls, e.g. ``models/imdb``.
        version: the version number; default one more than the highest existing version.
            An existing version is never overwritten.
        extra_files: JSON documents written to ``assets.extra/<name>`` (training config,
            evaluation), which TF Serving ignores and people read.
        shards: parts a large batch is cut into (``make_serving_function``).

    Raises:
        ExportError: the version exists, or the written model breaks the serving contract.
    """
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(base_dir)
    if version is None:
        version = (latest_version(base_dir) or 0) + 1
    if version < 1:
        raise ExportError(f"model versions are positive integers, got {version}")
    target = base_dir / str(version)
    if target.exists():
        raise ExportError(f"{target} already exists; versions are never overwritten")
    staging = base_dir / f".export-{version}-{os.getpid()}"
    try:
        archive = keras.export.ExportArchive()
        # add_endpoint() tracks every variable the function uses. Tracking the whole model as
        # well would save each weight a second time (Keras 3.15: 54 MB instead of 28 MB), so
        # only the lookup tables, which add_endpoint() misses inside custom layers, are tracked.
        for table in lookup_tables(text_model):
            archive.track(table)
        archive.add_endpoint(SIGNATURE_NAME, make_serving_function(text_model, shards))
        archive.write_out(str(staging), verbose=False)
        _write_warmup_requests(staging / WARMUP_FILE)
        for name, document in (extra_files or {}).items():
            (staging / "assets.extra" / name).write_text(
                json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
        verify_export(staging)
        # rename() is atomic on one file system and fails if another export took the number.
        try:
            staging.rename(target)
        except OSError as error:
            raise ExportError(f"cannot move the export into {target}: {error}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("Exported version %d to %s", version, target)
    return target


def verify_export(path: str | Path) -> dict[str, np.ndarray]:
    """Loads an export in a TF1 session as TF Serving does and checks it against the contract
    (``serving/export_check.py``, which ``python -m serving rollout publish`` runs too).

    Returns:
        The outputs for ``WARMUP_REVIEWS``, for logging and tests.

    Raises:
        ExportError: the export cannot be loaded, or its signature, ops or outputs break the
            contract.
    """
    try:
        return check_export(path, WARMUP_REVIEWS)
    except ExportCheckError as error:
        raise ExportError(str(error)) from error


def _write_warmup_requests(path: Path) -> None:
    """TFRecord of PredictionLog records that TF Serving replays while loading the version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=MODEL_NAME, signature_name=SIGNATURE_NAME)
    )
    request.inputs[INPUT_KEY].CopyFrom(
        tf.make_tensor_proto(np.array(WARMUP_REVIEWS, dtype=object), dtype=tf.string)
    )
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(WARMUP_RECORDS):
            writer.write(log.SerializeToString())


def _remove_abandoned_staging(base_dir: Path) -> None:
    """Deletes staging folders of exports whose process is gone (killed mid-export)."""
    for child in base_dir.iterdir():
        match = STAGING_PATTERN.match(child.name)
        if match and not _process_alive(int(match.group(2))):
            logger.warning("Removing %s, left by an interrupted export", child)
            shutil.rmtree(child, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
