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

# --- Deployment and monitoring wire names --------------------------------------------------
# Read by the rollout verbs, the Makefile and scripts/deploy.sh (plain python3 -c); the YAML and
# config files in k8s/ spell the same values (tests/unit/test_contract.py checks them).
# Kubernetes namespace of every object in k8s/ (k8s/base/kustomization.yaml).
K8S_NAMESPACE = "imdb-serving"
# ConfigMap holding the models.config that the repository-mode pods mount and re-read.
MODELS_CONFIGMAP = "imdb-models"
# HTTP path of TF Serving's Prometheus metrics on the REST port (k8s/base/config/monitoring.config).
METRICS_PATH = "/monitoring/prometheus/metrics"
# Counter of every inference request, by model_name and status, as TF Serving names it.
REQUEST_COUNT_METRIC = ":tensorflow:serving:request_count"
# --- end of the deployment and monitoring wire names ----------------------------------------

# Limits the server and its clients share.
# Largest request or response message, in bytes: the local server's --max_request_bytes default,
# the gRPC clients' receive limit (gRPC's own default is 4 MiB, too small for large batches).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Default deadline of one client request (the client, the smoke test, the load test), seconds.
REQUEST_TIMEOUT_SECONDS = 10.0
# The latency objective: p99 of one request, milliseconds (the load test's ramp, the capacity plan
# and the serving benchmark judge against it unless told otherwise).
LATENCY_SLO_P99_MS = 20.0

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
