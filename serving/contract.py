"""The serving contract: every name that crosses a process boundary.

Training imports these names to export the model; the client, the smoke test, the local server,
the Dockerfile, compose and the Kubernetes manifests use the same values (a test checks the
non-Python files against this module). This module has no dependencies so that anything can
import it cheaply.
"""

# Name under which the model is served; also the folder under the model base path (models/imdb).
MODEL_NAME = "imdb"
# SignatureDef the clients call; TF Serving uses it when a request names no signature.
SIGNATURE_NAME = "serving_default"
# MetaGraph tag set that TF Serving loads.
SAVED_MODEL_TAG = "serve"
# method_name of the predict SignatureDef.
PREDICT_METHOD_NAME = "tensorflow/serving/predict"

# The single input: a batch of raw review strings, DT_STRING, shape [-1].
INPUT_KEY = "review"
# Output: probability that the review is positive, DT_FLOAT, shape [-1].
OUTPUT_PROBABILITY = "probability"
# Output: POSITIVE_LABEL or NEGATIVE_LABEL, DT_STRING, shape [-1].
OUTPUT_LABEL = "label"
OUTPUT_KEYS = (OUTPUT_LABEL, OUTPUT_PROBABILITY)

# Class names, in the order of the model's 0/1 target.
NEGATIVE_LABEL = "negative"
POSITIVE_LABEL = "positive"
LABELS = (NEGATIVE_LABEL, POSITIVE_LABEL)
# A review is labelled positive when its probability is at least this value.
DECISION_THRESHOLD = 0.5

# Ports of tensorflow_model_server as the tensorflow/serving image exposes them.
GRPC_PORT = 8500
REST_PORT = 8501

# Where `python -m training train` writes versions and where `make serve` serves them from,
# relative to the project root.
MODEL_BASE_DIR = f"models/{MODEL_NAME}"
# Inside the serving image: the base path tensorflow_model_server polls.
CONTAINER_MODEL_BASE_PATH = f"/models/{MODEL_NAME}"

# Warmup records that TF Serving replays before a version becomes AVAILABLE.
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"

# The SignatureDef the export must have and the smoke test checks: key -> (dtype, shape), where
# -1 is the batch dimension.
EXPECTED_INPUTS = {INPUT_KEY: ("DT_STRING", (-1,))}
EXPECTED_OUTPUTS = {
    OUTPUT_PROBABILITY: ("DT_FLOAT", (-1,)),
    OUTPUT_LABEL: ("DT_STRING", (-1,)),
}


def signature_problems(
    inputs: dict[str, tuple[str, tuple[int, ...] | None]],
    outputs: dict[str, tuple[str, tuple[int, ...] | None]],
) -> list[str]:
    """Differences between a signature and the contract, as readable sentences.

    Args:
        inputs: input key -> (dtype name such as "DT_STRING", shape or None if unknown rank).
        outputs: the same for outputs.

    Returns:
        An empty list when the signature matches ``EXPECTED_INPUTS`` and ``EXPECTED_OUTPUTS``.
    """
    problems = []
    for kind, actual, expected in (
        ("input", inputs, EXPECTED_INPUTS),
        ("output", outputs, EXPECTED_OUTPUTS),
    ):
        if set(actual) != set(expected):
            problems.append(
                f"{kind} keys are {sorted(actual)}, the contract expects {sorted(expected)}"
            )
        for key in sorted(set(actual) & set(expected)):
            dtype, shape = actual[key]
            want_dtype, want_shape = expected[key]
            if dtype != want_dtype:
                problems.append(
                    f"{kind} {key!r} has dtype {dtype}, the contract expects {want_dtype}"
                )
            if shape is None or tuple(shape) != want_shape:
                problems.append(
                    f"{kind} {key!r} has shape {shape}, the contract expects {list(want_shape)}"
                )
    return problems
