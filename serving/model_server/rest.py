"""REST front end: TF Serving's ``/v1/models/...`` API as a WSGI application.

Routing, the ``{"error": ...}`` body and the status-to-HTTP mapping follow TF Serving's
``http_rest_api_handler.cc``; the tensors in the JSON documents go through ``json_codec``. A peer
of ``grpc_service.py`` over the same manager and predict step. Served by waitress (see
``server.py``).
"""

from __future__ import annotations

import json
import logging
import re
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf import json_format
from tensorflow_serving.apis import model_pb2

from serving.contract import SIGNATURE_NAME
from serving.model_server import json_codec
from serving.model_server.batching import BatchScheduler
from serving.model_server.errors import ServingError, invalid_argument
from serving.model_server.manager import ModelManager
from serving.model_server.predict import run_signature
from serving.versions import MAX_VERSION

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
NOT_FOUND_HTML = (
    b"<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1>"
    b"<p>The requested URL was not found on this server.</p></body></html>"
)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class RestApi:
    """The WSGI application. One instance serves all requests, from many threads."""

    def __init__(
        self,
        manager: ModelManager,
        timeout_seconds: float | None = 30.0,
        scheduler: BatchScheduler | None = None,
        metrics_path: str | None = None,
    ):
        self._manager = manager
        self._timeout_seconds = timeout_seconds
        self._scheduler = scheduler
        # The Prometheus endpoint's path (--monitoring_config_file), or None when it is off.
        self._metrics_path = metrics_path
        self._metrics = manager.metrics

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        if self._metrics_path is not None and path == self._metrics_path:
            return self._scrape(environ, path, start_response)
        if method == "OPTIONS":
            origin = environ.get("HTTP_ORIGIN", "")
            return _respond(start_response, 200 if ORIGIN_PATTERN.fullmatch(origin) else 400, b"")
        if not V1_PATTERN.fullmatch(path):
            start_response("404 Not Found", [("Content-Type", "text/html")])
            return [NOT_FOUND_HTML]
        started = time.perf_counter()
        try:
            body = self._dispatch(method, path, environ)
            self._count(method, path, "OK", started)
            return _respond(start_response, 200, body)
        except ServingError as error:
            self._count(method, path, error.code.name, started)
            return _respond(start_response, error.http_status, _error_body(error.message))
        except Exception as error:  # a bug must not kill the server; report it as a 500
            logger.exception("REST handler failed for %s %s", method, path)
            self._count(method, path, "UNKNOWN", started)
            return _respond(start_response, 500, _error_body(f"{type(error).__name__}: {error}"))

    def _scrape(self, environ: dict, path: str, start_response: StartResponse) -> list[bytes]:
        """The Prometheus endpoint: any method, the exact path, no query string (TF Serving)."""
        query = environ.get("QUERY_STRING", "")
        if query:
            body = f"Unexpected path: {path}?{query}. Should be {self._metrics_path}".encode()
            status = "400 Bad Request"
        else:
            body, status = self._metrics.exposition(), "200 OK"
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    def _count(self, method: str, path: str, status: str, started: float) -> None:
        """request_count of every inference request; request_latency of the successful ones."""
        match = POST_PATTERN.fullmatch(path) if method == "POST" else None
        if match is None:
            return
        name, api = match.group(1), match.group(4).lower()
        self._metrics.count_request(name, status)
        if status == "OK":
            self._metrics.observe_request(name, api, "REST", time.perf_counter() - started)

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
            document = json_codec.parse_json(_read_body(environ))
            version_number = _parse_version(version)
            if verb.lower() == "predict":
                return self._predict(name, version_number, label, document)
            # TF Serving reads the whole body before it looks the model up (a 400 first).
            json_codec.check_examples_request(document)
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
            signatures = lease.bundle.signature_def_map()
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
        # TF Serving's order (FillPredictRequestFromJson): the object and its signature_name,
        # then the servable and signature lookup, then the rest of the document.
        signature_name = json_codec.signature_name_of(document) or SIGNATURE_NAME
        with self._manager.lease(name, version, label) as lease:
            if signature_name not in lease.bundle.signature_defs:
                raise invalid_argument(
                    f'Serving signature name: "{signature_name}" not found in signature def'
                )
            specs = lease.bundle.inputs(signature_name)
            if not specs:  # a signature without inputs, such as __saved_model_init_op
                raise invalid_argument(f"Failed to get input map for signature: {signature_name}")
            has_instances, has_inputs = "instances" in document, "inputs" in document
            if has_instances and has_inputs:
                raise invalid_argument(
                    f"JSON Value: {json_codec.quote(document)} Not formatted correctly expecting "
                    "only one of 'inputs' or 'instances' keys to exist "
                )
            if not has_instances and not has_inputs:
                raise invalid_argument("Missing 'inputs' or 'instances' key")
            if has_instances:
                inputs = json_codec.row_inputs(specs, document)
            else:
                inputs = json_codec.columnar_inputs(specs, document["inputs"])
            run_started = time.perf_counter()
            outputs = run_signature(
                lease.bundle,
                signature_name,
                inputs,
                timeout_seconds=self._timeout_seconds,
                scheduler=self._scheduler,
            )
            self._metrics.observe_runtime(name, "predict", time.perf_counter() - run_started)
        if has_instances:
            return json_codec.encode_rows(outputs)
        return json_codec.encode_columns(outputs)

    def _refuse(self, name: str, version: int | None, label: str | None, verb: str) -> bytes:
        with self._manager.lease(name, version, label):
            kind = "classification" if verb == "classify" else "regression"
            raise invalid_argument(
                f"Expected {kind} signature method_name to be tensorflow/serving/{verb}. "
                "Was: tensorflow/serving/predict (the local server runs predict signatures only)"
            )


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


def _parse_version(version: str | None) -> int | None:
    if version is None:
        return None
    number = int(version)
    if number > MAX_VERSION:
        raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return number


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
