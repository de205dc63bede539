"""REST front end: TF Serving's ``/v1/models/...`` API as a WSGI application.

Routing, the JSON tensor codec, the ``{"error": ...}`` body and the status-to-HTTP mapping follow
``../shared/docs/tfserving-api.md`` §3. Served by waitress (see ``server.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterable
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from serving.model_server.bundle import SessionBundle
from serving.model_server.errors import ServingError, invalid_argument
from serving.model_server.grpc_service import signature_def_map
from serving.model_server.manager import ModelManager
from serving.model_server.predict import run_signature

logger = logging.getLogger(__name__)

GET_PATTERN = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
POST_PATTERN = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
V1_PATTERN = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
ORIGIN_PATTERN = re.compile(r"https?://.*", re.IGNORECASE)
# TF Serving decompresses gzip request bodies up to this size.
MAX_DECOMPRESSED_BYTES = 100 * 1024 * 1024
# The request document is quoted in error messages up to about this many characters.
DOC_QUOTE_LIMIT = 256
NOT_FOUND_HTML = (
    b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
    b"<p>The requested URL was not found on this server.</p></body></html>"
)
INT64_MAX = 2**63 - 1

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class RestApi:
    """The WSGI application. One instance serves all requests, from many threads."""

    def __init__(self, manager: ModelManager, timeout_seconds: float | None = 30.0):
        self._manager = manager
        self._timeout_seconds = timeout_seconds

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        if method == "OPTIONS":
            origin = environ.get("HTTP_ORIGIN", "")
            return _respond(start_response, 200 if ORIGIN_PATTERN.fullmatch(origin) else 400, b"")
        if not V1_PATTERN.fullmatch(path):
            start_response("404 Not Found", [("Content-Type", "text/html")])
            return [NOT_FOUND_HTML]
        try:
            body = self._dispatch(method, path, environ)
            return _respond(start_response, 200, body)
        except ServingError as error:
            return _respond(start_response, error.http_status, _error_body(error.message))
        except Exception as error:  # a bug must not kill the server; report it as a 500
            logger.exception("REST handler failed for %s %s", method, path)
            return _respond(start_response, 500, _error_body(f"{type(error).__name__}: {error}"))

    def _dispatch(self, method: str, path: str, environ: dict) -> bytes:
        if method == "GET" and (match := GET_PATTERN.fullmatch(path)):
            name, version, label, metadata = match.groups()
            if name is None:
                raise invalid_argument("Missing model name in request.")
            version_number = _parse_version(version)
            if metadata:
                return self._metadata(name, version_number, label)
            return self._status(name, version_number)
        if method == "POST" and (match := POST_PATTERN.fullmatch(path)):
            name, version, label, verb = match.groups()
            document = _parse_json(_read_body(environ))
            version_number = _parse_version(version)
            if verb.lower() == "predict":
                return self._predict(name, version_number, label, document)
            return self._refuse(name, version_number, label, verb.lower())
        raise invalid_argument(f"Malformed request: {method} {path}")

    def _status(self, name: str, version: int | None) -> bytes:
        response = self._manager.status(name, version)
        return _json_bytes(
            json_format.MessageToDict(
                response,
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        )

    def _metadata(self, name: str, version: int | None, label: str | None) -> bytes:
        with self._manager.lease(name, version, label) as lease:
            signatures = signature_def_map(lease)
            version_number = lease.version.number
        model_spec = model_pb2.ModelSpec(name=name)
        model_spec.version.value = version_number
        options = {
            "preserving_proto_field_name": True,
            "always_print_fields_with_no_presence": True,
        }
        return _json_bytes(
            {
                "model_spec": json_format.MessageToDict(model_spec, **options),
                "metadata": {"signature_def": json_format.MessageToDict(signatures, **options)},
            }
        )

    def _predict(self, name: str, version: int | None, label: str | None, document: Any) -> bytes:
        if not isinstance(document, dict):
            raise invalid_argument(f"JSON Value: {_quote(document)} Is not object")
        signature_name = document.get("signature_name", "serving_default")
        if not isinstance(signature_name, str):
            raise invalid_argument(
                f"JSON Value: {_quote(document)} not formatted correctly. 'signature_name' key "
                "must be a string value."
            )
        has_instances, has_inputs = "instances" in document, "inputs" in document
        if has_instances and has_inputs:
            raise invalid_argument(
                f"JSON Value: {_quote(document)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        if not has_instances and not has_inputs:
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        with self._manager.lease(name, version, label) as lease:
            signature_name = signature_name or "serving_default"
            if signature_name not in lease.bundle.signature_defs:
                raise invalid_argument(
                    f'Serving signature name: "{signature_name}" not found in signature def'
                )
            if has_instances:
                inputs = _row_inputs(lease.bundle, signature_name, document)
            else:
                inputs = _columnar_inputs(lease.bundle, signature_name, document["inputs"])
            outputs = run_signature(
                lease.bundle, signature_name, inputs, timeout_seconds=self._timeout_seconds
            )
        if has_instances:
            return _encode_rows(outputs)
        if len(outputs) == 1:
            ((key, value),) = outputs.items()
            return b'{"outputs": ' + _encode_tensor(value, key).encode() + b"}"
        parts = [f"{json.dumps(k)}: {_encode_tensor(v, k)}" for k, v in outputs.items()]
        return ('{"outputs": {' + ", ".join(parts) + "}}").encode()

    def _refuse(self, name: str, version: int | None, label: str | None, verb: str) -> bytes:
        with self._manager.lease(name, version, label):
            kind = "classification" if verb == "classify" else "regression"
            raise invalid_argument(
                f"Expected {kind} signature method_name to be tensorflow/serving/{verb}. "
                "Was: tensorflow/serving/predict (the local server runs predict signatures only)"
            )


# --------------------------------------------------------------------------------------------
# Request parsing


def _read_body(environ: dict) -> bytes:
    stream = environ.get("wsgi.input")
    body = stream.read() if stream is not None else b""
    if environ.get("HTTP_CONTENT_ENCODING", "").lower() == "gzip":
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            body = decompressor.decompress(body, MAX_DECOMPRESSED_BYTES)
        except zlib.error as error:
            raise invalid_argument(f"Failed to decompress gzip request body: {error}") from error
        if decompressor.unconsumed_tail:
            raise invalid_argument(
                f"Decompressed request body exceeds {MAX_DECOMPRESSED_BYTES} bytes"
            )
    return body


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return json.loads(body)
    except UnicodeDecodeError as error:
        raise invalid_argument(
            f"JSON Parse error: Invalid encoding in string. at offset: {error.start}"
        ) from error
    except json.JSONDecodeError as error:
        raise invalid_argument(
            f"JSON Parse error: Invalid value. at offset: {error.pos}"
        ) from error
    except RecursionError as error:
        raise invalid_argument("JSON Parse error: The document nests too deeply") from error


def _parse_version(version: str | None) -> int | None:
    if version is None:
        return None
    number = int(version)
    if number > INT64_MAX:
        raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return number


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and "b64" in value


def _row_inputs(
    bundle: SessionBundle, signature_name: str, document: dict
) -> dict[str, np.ndarray]:
    instances = document["instances"]
    if not isinstance(instances, list):
        raise invalid_argument(
            f"JSON Value: {_quote(document)} Expecting 'instances' to be an list/array"
        )
    if not instances:
        raise invalid_argument(f"JSON Value: {_quote(document)} No values in 'instances' array")
    specs = bundle.inputs(signature_name)
    named = isinstance(instances[0], dict) and not _is_b64(instances[0])
    if len(specs) > 1 and not named:
        raise invalid_argument(
            "Expecting object but got list at item 0 of input list"
            if isinstance(instances[0], list)
            else "Expecting object but got value at item 0 of input list"
        )
    columns: dict[str, list[np.ndarray]] = {key: [] for key in specs}
    for index, element in enumerate(instances):
        element_named = isinstance(element, dict) and not _is_b64(element)
        if element_named != named:
            wanted, got = ("object", "list") if named else ("value/list", "object")
            raise invalid_argument(
                f"Expecting {wanted} but got {got} at item {index} of input list"
            )
        values = element if named else {next(iter(specs)): element}
        for key in values:
            if key not in specs:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
        for key, spec in specs.items():
            if key not in values:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {key} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: JSON object: does not have named input: {key}"
                )
            try:
                array = _to_array(values[key], spec.dtype)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: {error.message}"
                ) from error
            if columns[key] and columns[key][0].shape != array.shape:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: Expecting shape {list(columns[key][0].shape)} but got: "
                    f"{list(array.shape)}"
                )
            columns[key].append(array)
    return {key: np.stack(arrays) for key, arrays in columns.items()}


def _columnar_inputs(
    bundle: SessionBundle, signature_name: str, value: Any
) -> dict[str, np.ndarray]:
    specs = bundle.inputs(signature_name)
    if isinstance(value, dict) and not _is_b64(value):
        inputs = {}
        for key, spec in specs.items():
            if key not in value:
                raise invalid_argument(f"Missing named input: {key} in 'inputs' object.")
            inputs[key] = _to_array(value[key], spec.dtype)
        for key in value:
            if key not in specs:
                raise invalid_argument(f"JSON object: does not have named input: {key}")
        return inputs
    if len(specs) != 1:
        raise invalid_argument(
            f"'inputs' must be an object naming each of the inputs {sorted(specs)}"
        )
    ((key, spec),) = specs.items()
    return {key: _to_array(value, spec.dtype)}


def _to_array(value: Any, dtype: tf.dtypes.DType) -> np.ndarray:
    """A nested JSON list (or scalar) of one dtype to a rectangular NumPy array."""
    shape = _shape_of(value)
    flat: list[Any] = []
    _flatten(value, shape, 0, flat)
    converted = [_convert_scalar(item, dtype) for item in flat]
    if dtype == tf.string:
        array = np.empty(len(converted), dtype=object)
        array[:] = converted
    else:
        array = np.array(converted, dtype=dtype.as_numpy_dtype)
    return array.reshape(shape)


def _shape_of(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _flatten(value: Any, shape: list[int], depth: int, out: list[Any]) -> None:
    if depth == len(shape):
        if isinstance(value, list):
            raise invalid_argument(
                f"Expecting shape {shape} but got: a list at depth {depth} (ragged nesting)"
            )
        out.append(value)
        return
    if not isinstance(value, list) or len(value) != shape[depth]:
        got = len(value) if isinstance(value, list) else 1
        raise invalid_argument(f"Expecting tensor size: {shape[depth]} but got: {got}")
    for item in value:
        _flatten(item, shape, depth + 1, out)


def _convert_scalar(value: Any, dtype: tf.dtypes.DType) -> Any:
    if dtype == tf.string:
        if isinstance(value, str):
            return value.encode("utf-8", errors="surrogatepass")
        if _is_b64(value) and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except (binascii.Error, ValueError) as error:
                raise invalid_argument("Unable to base64 decode") from error
    elif dtype.is_floating:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif dtype.is_integer:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        if is_int and dtype.min <= value <= dtype.max:
            return value
    elif dtype == tf.bool:
        if isinstance(value, bool):
            return value
    else:
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED,
            f"Conversion of JSON Value: {_quote(value)} to type: {dtype.name} is not supported",
        )
    raise invalid_argument(
        f"JSON Value: {_quote(value)} Type: {_json_type(value)} is not of expected type: "
        f"{dtype.name}"
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, (int, float)):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def _quote(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= DOC_QUOTE_LIMIT else text[:DOC_QUOTE_LIMIT] + "..."


# --------------------------------------------------------------------------------------------
# Response encoding


def _encode_rows(outputs: dict[str, np.ndarray]) -> bytes:
    batch_sizes = {key: (value.shape[0] if value.ndim else None) for key, value in outputs.items()}
    for key, size in batch_sizes.items():
        if size is None:
            raise invalid_argument(f"Tensor name: {key} has no shape information ")
    sizes = set(batch_sizes.values())
    if len(sizes) > 1:
        key = next(iter(outputs))
        raise invalid_argument(
            f"Tensor name: {key} has inconsistent batch size: {batch_sizes[key]} expecting: "
            f"{max(sizes)}"
        )
    if len(outputs) == 1:
        ((key, value),) = outputs.items()
        rows = [_encode_tensor(value[i], key) for i in range(value.shape[0])]
    else:
        count = next(iter(sizes), 0)
        rows = [
            "{"
            + ", ".join(f"{json.dumps(k)}: {_encode_tensor(v[i], k)}" for k, v in outputs.items())
            + "}"
            for i in range(count)
        ]
    return ('{"predictions": [' + ", ".join(rows) + "]}").encode()


def _encode_tensor(value: np.ndarray | Any, name: str) -> str:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return "[" + ", ".join(_encode_tensor(item, name) for item in value) + "]"
    item = value.item() if isinstance(value, np.generic | np.ndarray) else value
    if isinstance(item, bytes):
        if name.endswith("_bytes"):
            return json.dumps({"b64": base64.b64encode(item).decode("ascii")})
        return json.dumps(item.decode("utf-8", errors="replace"), ensure_ascii=False)
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, float):
        is_float32 = isinstance(value, np.floating) and value.dtype == np.float32
        return format_decimal(item, single_precision=is_float32)
    return json.dumps(item)


def format_decimal(value: float, single_precision: bool) -> str:
    """TF Serving's WriteDecimal: shortest ``%g`` of 6 digits that round-trips, else 9 or 17."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = f"{value:.6g}"
    round_trips = (
        np.float32(float(text)) == np.float32(value) if single_precision else float(text) == value
    )
    if not round_trips:
        text = f"{value:.9g}" if single_precision else f"{value:.17g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}, ensure_ascii=False).encode("utf-8")


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, indent=1, ensure_ascii=False).encode("utf-8")


def _respond(start_response: StartResponse, status: int, body: bytes) -> list[bytes]:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]
