"""One session run on a loaded version, with TensorFlow's errors as TF Serving's status codes.

The last step of every Predict: ``predict.py`` runs a single request here, and ``batching.py``
runs a merged batch here. It has a module of its own so that neither of the two imports the
other.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from serving.model_server.errors import ServingError
from serving.savedmodel import SessionBundle


def run_bundle(
    bundle: SessionBundle,
    signature_name: str,
    inputs: dict[str, np.ndarray],
    output_keys: list[str],
    timeout_seconds: float | None = None,
) -> dict[str, np.ndarray]:
    """Runs the signature on inputs already checked against it (``SessionBundle.check_inputs``).

    Raises:
        ServingError: the code and message of the TensorFlow error, as TF Serving sends them
            (e.g. DEADLINE_EXCEEDED after ``timeout_seconds``).
    """
    try:
        return bundle.run(signature_name, inputs, output_keys, timeout_seconds=timeout_seconds)
    except tf.errors.OpError as error:
        raise ServingError.from_op_error(error) from error
