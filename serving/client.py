"""Clients for any TF Serving endpoint serving the sentiment model: REST and gRPC.

Both clients offer the same calls (``status``, ``metadata``, ``predict``), return the same types
and raise the same ``RequestError``, so callers (the CLI, the smoke test, a load test) can switch
transport with one argument. They work against the real ``tensorflow/serving`` and against the
local server alike.

The REST client needs only ``requests``. The gRPC client imports the ``tensorflow-serving-api``
protos when it is created; those import TensorFlow's proto modules, which costs a couple of
seconds, so the import is deferred until a gRPC client is actually made.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import requests

from serving.contract import (
    INPUT_KEY,
    MAX_MESSAGE_BYTES,
    MODEL_NAME,
    OUTPUT_LABEL,
    OUTPUT_PROBABILITY,
    REQUEST_TIMEOUT_SECONDS,
    SIGNATURE_NAME,
)

# HTTP status -> TF/gRPC code name, the inverse of TF Serving's mapping (ambiguous ones chosen
# by the most likely cause: 400 is mostly INVALID_ARGUMENT, 409 ABORTED, 500 INTERNAL).
HTTP_STATUS_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class RequestError(Exception):
    """A call to the server failed.

    Attributes:
        code: the TF/gRPC status code name, e.g. ``NOT_FOUND``, ``UNAVAILABLE`` (also used when
            the server cannot be reached).
        message: the server's error message, or the connection problem.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one review."""

    probability: float
    label: str


@dataclass(frozen=True)
class VersionStatus:
    """One entry of GetModelStatus."""

    version: int
    state: str
    error_code: str
    error_message: str


@dataclass(frozen=True)
class ModelMetadata:
    """The served version and its ``serving_default`` signature, transport-neutral.

    ``inputs``/``outputs`` map keys to (dtype name, shape or None) as
    ``serving.contract.signature_problems`` takes them.
    """

    version: int
    inputs: dict[str, tuple[str, tuple[int, ...] | None]]
    outputs: dict[str, tuple[str, tuple[int, ...] | None]]


class SentimentClient(Protocol):
    """What both transports offer."""

    transport: str

    def status(self, version: int | None = None) -> list[VersionStatus]: ...

    def metadata(self, version: int | None = None, label: str | None = None) -> ModelMetadata: ...

    def predict(
        self, texts: Sequence[str], version: int | None = None, label: str | None = None
    ) -> list[Prediction]: ...

    def close(self) -> None: ...

    def __enter__(self) -> SentimentClient: ...

    def __exit__(self, *exc_info: object) -> None: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("predict() takes a sequence of reviews, not a single string")
    texts = list(texts)
    if not texts:
        raise ValueError("predict() needs at least one review")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"review {index} is {type(text).__name__}, not str")
    return texts


def _predictions(
    probabilities: Sequence[float], labels: Sequence[str], count: int
) -> list[Prediction]:
    if len(probabilities) != count or len(labels) != count:
        raise RequestError(
            "INTERNAL",
            f"server returned {len(probabilities)} probabilities and {len(labels)} labels "
            f"for {count} reviews",
        )
    predictions = []
    for probability, label in zip(probabilities, labels, strict=True):
        if not isinstance(probability, int | float) or not isinstance(label, str):
            raise RequestError(
                "INTERNAL", f"malformed prediction: probability {probability!r}, label {label!r}"
            )
        predictions.append(Prediction(float(probability), label))
    return predictions


class RestClient:
    """TF Serving's REST API over one reused HTTP session.

    Args:
        base_url: e.g. ``http://localhost:8501`` (no path).
        model_name: the served model's name.
        timeout: seconds per request.
        session: a ``requests.Session`` to reuse (one is created otherwise).
    """

    transport = "REST"

    def __init__(
        self,
        base_url: str,
        model_name: str = MODEL_NAME,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        session: requests.Session | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"REST URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.timeout = timeout
        self._session = session or requests.Session()

    def _model_url(self, version: int | None = None, label: str | None = None) -> str:
        url = f"{self.base_url}/v1/models/{self.model_name}"
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        if version is not None:
            url += f"/versions/{int(version)}"
        elif label is not None:
            url += f"/labels/{label}"
        return url

    def _call(self, method: str, url: str, body: Any = None) -> Any:
        try:
            response = self._session.request(method, url, json=body, timeout=self.timeout)
        except requests.Timeout as error:
            raise RequestError("DEADLINE_EXCEEDED", f"{method} {url}: {error}") from error
        except requests.RequestException as error:
            raise RequestError("UNAVAILABLE", f"{method} {url}: {error}") from error
        try:
            document = response.json()
        except ValueError:
            document = None
        if response.status_code != 200:
            message = document.get("error") if isinstance(document, dict) else None
            raise RequestError(
                HTTP_STATUS_CODES.get(response.status_code, "UNKNOWN"),
                message
                or f"HTTP {response.status_code} from {method} {url}: {response.text[:200]}",
            )
        if document is None:
            raise RequestError("INTERNAL", f"{method} {url}: response is not JSON")
        return document

    def status(self, version: int | None = None) -> list[VersionStatus]:
        document = self._call("GET", self._model_url(version))
        return [
            VersionStatus(
                version=int(entry["version"]),
                state=entry["state"],
                error_code=entry.get("status", {}).get("error_code", "OK"),
                error_message=entry.get("status", {}).get("error_message", ""),
            )
            for entry in document.get("model_version_status", [])
        ]

    def metadata(self, version: int | None = None, label: str | None = None) -> ModelMetadata:
        document = self._call("GET", self._model_url(version, label) + "/metadata")
        try:
            signature = document["metadata"]["signature_def"]["signature_def"][SIGNATURE_NAME]
            return ModelMetadata(
                version=int(document["model_spec"]["version"]),
                inputs={k: _json_tensor_info(v) for k, v in signature.get("inputs", {}).items()},
                outputs={k: _json_tensor_info(v) for k, v in signature.get("outputs", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as error:
            raise RequestError(
                "INTERNAL", f"metadata response lacks the {SIGNATURE_NAME} signature: {error}"
            ) from error

    def predict(
        self, texts: Sequence[str], version: int | None = None, label: str | None = None
    ) -> list[Prediction]:
        texts = _check_texts(texts)
        document = self._call(
            "POST",
            self._model_url(version, label) + ":predict",
            {"signature_name": SIGNATURE_NAME, "instances": texts},
        )
        rows = document.get("predictions")
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise RequestError(
                "INTERNAL", f"unexpected predict response: {json.dumps(document)[:200]}"
            )
        return _predictions(
            [row.get(OUTPUT_PROBABILITY) for row in rows],
            [row.get(OUTPUT_LABEL) for row in rows],
            len(texts),
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RestClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _json_tensor_info(info: dict) -> tuple[str, tuple[int, ...] | None]:
    shape = info.get("tensor_shape", {})
    if shape.get("unknown_rank"):
        return info.get("dtype", ""), None
    return info.get("dtype", ""), tuple(int(dim["size"]) for dim in shape.get("dim", []))


class GrpcClient:
    """TF Serving's gRPC API (PredictionService, ModelService) over one reused channel.

    Args:
        target: ``host:port`` of the gRPC port.
        model_name: the served model's name.
        timeout: seconds per call (sent as the gRPC deadline, which TF Serving also applies to
            the session run).
        channel: a channel to reuse (one is created otherwise, with a 64 MB receive limit).
    """

    transport = "gRPC"

    def __init__(
        self,
        target: str,
        model_name: str = MODEL_NAME,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        channel: Any = None,
    ):
        import grpc
        from tensorflow_serving.apis import (
            get_model_metadata_pb2,
            get_model_status_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
        )

        self._grpc = grpc
        self._metadata_pb2 = get_model_metadata_pb2
        self._status_pb2 = get_model_status_pb2
        self._predict_pb2 = predict_pb2
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        self._channel = channel or grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        )
        self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _spec(self, request: Any, version: int | None = None, label: str | None = None) -> None:
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        request.model_spec.name = self.model_name
        if version is not None:
            request.model_spec.version.value = int(version)
        elif label is not None:
            request.model_spec.version_label = label

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as error:
            raise RequestError(error.code().name, error.details() or str(error)) from error

    def status(self, version: int | None = None) -> list[VersionStatus]:
        from tensorflow.core.protobuf import error_codes_pb2

        request = self._status_pb2.GetModelStatusRequest()
        self._spec(request, version)
        response = self._call(self._models.GetModelStatus, request)
        state_names = self._status_pb2.ModelVersionStatus.State
        return [
            VersionStatus(
                version=entry.version,
                state=state_names.Name(entry.state),
                error_code=error_codes_pb2.Code.Name(entry.status.error_code),
                error_message=entry.status.error_message,
            )
            for entry in response.model_version_status
        ]

    def metadata(self, version: int | None = None, label: str | None = None) -> ModelMetadata:
        request = self._metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request, version, label)
        response = self._call(self._prediction.GetModelMetadata, request)
        signature_map = self._metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        if SIGNATURE_NAME not in signature_map.signature_def:
            raise RequestError("INTERNAL", f"metadata lacks the {SIGNATURE_NAME} signature")
        signature = signature_map.signature_def[SIGNATURE_NAME]
        return ModelMetadata(
            version=response.model_spec.version.value,
            inputs={k: _proto_tensor_info(v) for k, v in signature.inputs.items()},
            outputs={k: _proto_tensor_info(v) for k, v in signature.outputs.items()},
        )

    def predict(
        self, texts: Sequence[str], version: int | None = None, label: str | None = None
    ) -> list[Prediction]:
        texts = _check_texts(texts)
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

        request = self._predict_pb2.PredictRequest()
        self._spec(request, version, label)
        request.model_spec.signature_name = SIGNATURE_NAME
        request.inputs[INPUT_KEY].CopyFrom(
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(texts))]
                ),
                string_val=[text.encode("utf-8") for text in texts],
            )
        )
        response = self._call(self._prediction.Predict, request)
        for key in (OUTPUT_PROBABILITY, OUTPUT_LABEL):
            if key not in response.outputs:
                raise RequestError("INTERNAL", f"predict response has no {key!r} output")
        return _predictions(
            _float_values(response.outputs[OUTPUT_PROBABILITY]),
            [
                value.decode("utf-8", errors="replace")
                for value in response.outputs[OUTPUT_LABEL].string_val
            ],
            len(texts),
        )

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _proto_tensor_info(info: Any) -> tuple[str, tuple[int, ...] | None]:
    from tensorflow.core.framework import types_pb2

    dtype = types_pb2.DataType.Name(info.dtype)
    if info.tensor_shape.unknown_rank:
        return dtype, None
    return dtype, tuple(dim.size for dim in info.tensor_shape.dim)


def _float_values(tensor: Any) -> list[float]:
    """DT_FLOAT values from either ``float_val`` or packed ``tensor_content``."""
    if tensor.float_val:
        return list(tensor.float_val)
    if tensor.tensor_content:
        import numpy as np

        return np.frombuffer(tensor.tensor_content, dtype="<f4").tolist()
    return []


def make_client(
    rest_url: str | None = None,
    grpc_target: str | None = None,
    model_name: str = MODEL_NAME,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> SentimentClient:
    """A REST client for ``rest_url`` or a gRPC client for ``grpc_target`` (exactly one)."""
    if (rest_url is None) == (grpc_target is None):
        raise ValueError("give exactly one of a REST URL and a gRPC target")
    if rest_url is not None:
        return RestClient(rest_url, model_name, timeout)
    return GrpcClient(grpc_target, model_name, timeout)


def wait_until_available(
    client: SentimentClient, deadline_seconds: float, poll_seconds: float = 0.5
) -> list[VersionStatus]:
    """Polls the model status until some version is AVAILABLE, under a deadline.

    Fails fast when every known version has ENDed with an error (the TFX template's rule).

    Raises:
        RequestError: DEADLINE_EXCEEDED when the deadline passes (with the last thing seen),
            FAILED_PRECONDITION when the model can no longer become available.
    """
    deadline = time.monotonic() + deadline_seconds
    last_problem = "no answer yet"
    while True:
        try:
            versions = client.status()
            if any(v.state == "AVAILABLE" for v in versions):
                return versions
            failed = [v for v in versions if v.state == "END" and v.error_code != "OK"]
            if versions and len(failed) == len(versions):
                raise RequestError(
                    "FAILED_PRECONDITION",
                    "every version failed to load: "
                    + "; ".join(f"version {v.version}: {v.error_message}" for v in failed),
                )
            last_problem = (
                ", ".join(f"version {v.version} {v.state}" for v in versions) or "no versions"
            )
        except RequestError as error:
            if error.code == "FAILED_PRECONDITION":
                raise
            last_problem = str(error)
        if time.monotonic() >= deadline:
            raise RequestError(
                "DEADLINE_EXCEEDED",
                f"model not AVAILABLE over {client.transport} after {deadline_seconds:.0f} s "
                f"({last_problem})",
            )
        time.sleep(poll_seconds)
