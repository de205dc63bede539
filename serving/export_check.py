"""Checks a SavedModel version folder against the serving contract, loaded as TF Serving loads it.

Run on every version before it can be served: by ``training/export.py`` before an export
becomes a numeric folder, and by ``python -m serving rollout publish`` before an upload to the
model repository (a folder that may come from anywhere). Needs TensorFlow, through
``serving/savedmodel.py``; import it only where a version is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from serving.contract import INPUT_KEY, OUTPUT_PROBABILITY, SIGNATURE_NAME, signature_problems
from serving.savedmodel import PYTHON_ONLY_OPS, SessionBundle

# Reviews run through the loaded model: clearly positive, clearly negative and neutral text.
CHECK_REVIEWS = (
    "A wonderful, moving film with brilliant acting. I loved every minute of it.",
    "Dull, predictable and far too long. The worst film I have seen this year.",
    "It was fine.",
)


class ExportCheckError(Exception):
    """The folder cannot be loaded as TF Serving loads it, or breaks the serving contract."""


def check_export(path: str | Path, reviews: Sequence[str] = CHECK_REVIEWS) -> dict[str, np.ndarray]:
    """Loads a version in a TF1 session as TF Serving does and checks it against the contract:
    the ``serving_default`` signature's keys, dtypes and shapes, no Python-only ops, and
    probabilities in [0, 1] for ``reviews``.

    Returns:
        The signature's outputs for ``reviews``.

    Raises:
        ExportCheckError: the folder holds no loadable SavedModel, or it breaks the contract.
    """
    try:
        bundle = SessionBundle(path)
    except (OSError, RuntimeError, tf.errors.OpError) as error:
        # OSError: no or a corrupt saved_model.pb; RuntimeError: no 'serve' MetaGraph;
        # OpError: its variables or init op fail.
        raise ExportCheckError(f"{path}: TF Serving could not load it: {error}") from error
    try:
        if SIGNATURE_NAME not in bundle.signature_defs:
            raise ExportCheckError(f"{path}: no {SIGNATURE_NAME!r} signature")
        problems = signature_problems(
            {k: (v.dtype_name, v.shape) for k, v in bundle.inputs(SIGNATURE_NAME).items()},
            {k: (v.dtype_name, v.shape) for k, v in bundle.outputs(SIGNATURE_NAME).items()},
        )
        python_ops = bundle.op_types() & PYTHON_ONLY_OPS
        if python_ops:
            problems.append(f"graph uses Python-only ops {sorted(python_ops)}")
        if problems:
            raise ExportCheckError(f"{path}: breaks the serving contract: " + "; ".join(problems))
        batch = np.array(list(reviews), dtype=object)
        try:
            outputs = bundle.run(SIGNATURE_NAME, {INPUT_KEY: batch})
        except tf.errors.OpError as error:
            raise ExportCheckError(f"{path}: the signature fails on reviews: {error}") from error
        probability = outputs[OUTPUT_PROBABILITY]
        if probability.shape != (len(batch),) or not np.all(
            (probability >= 0.0) & (probability <= 1.0)
        ):
            raise ExportCheckError(
                f"{path}: probabilities out of [0, 1] or misshaped: {probability}"
            )
        return outputs
    finally:
        bundle.close()
