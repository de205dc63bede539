"""The REST API's OpenAPI document (serving/openapi.yaml) against the contract, the REST client
and the local server.

The document is valid OpenAPI 3.1 (openapi-spec-validator) and names what serving/contract.py
names. What the project's ``RestClient`` sends and what the local server answers are checked
with jsonschema (Draft 2020-12, the dialect of OpenAPI 3.1) against the document's own schemas;
a known-bad answer and a wrong document prove that the check can fail. schemathesis then fuzzes
the server from the document on loopback, a bounded run (``make fuzz`` runs a longer one).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jsonschema
import pytest
import requests
import yaml
from openapi_spec_validator import validate as validate_openapi
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from serving import contract
from serving.client import GrpcClient, RequestError, RestClient
from tests.helpers import PROJECT_ROOT, loopback_server

OPENAPI_PATH = PROJECT_ROOT / "serving" / "openapi.yaml"
# The Prometheus config the image and the manifests serve with.
MONITORING_CONFIG = PROJECT_ROOT / "k8s" / "base" / "config" / "monitoring.config"
# The label the served model config puts on version 1, so that the label routes answer 200.
LABEL = "stable"
# Request bodies above this size get 413 from the server under test (small, to test it cheaply).
MAX_REQUEST_BYTES = 256 * 1024
# The base URI under which the document is registered for jsonschema's $ref resolution.
DOCUMENT_URI = "urn:serving-openapi"
# The keys of a Path Item that are operations.
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# schemathesis' checks: no 5xx, and status code, content type and body as documented.
FUZZ_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
POSITIVE = "A wonderful, brilliant film. I loved every minute of it."
NEGATIVE = "An awful, boring film. A complete waste of time."


def load_document() -> dict:
    return yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def served(trained_model, tmp_path_factory):
    """The local server as the image runs it (Prometheus metrics, batching), the tiny model's
    version 1 labelled ``stable``, on free loopback ports."""
    base_dir, _ = trained_model
    config = tmp_path_factory.mktemp("openapi") / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "{contract.MODEL_NAME}" base_path: "{base_dir}" '
        f'model_platform: "tensorflow" version_labels {{ key: "{LABEL}" value: 1 }} }} }}\n'
    )
    server = loopback_server(
        model_config_file=str(config),
        allow_version_labels_for_unavailable_models=True,
        monitoring_config_file=str(MONITORING_CONFIG),
        enable_batching=True,
        max_request_bytes=MAX_REQUEST_BYTES,
    )
    server.start(load_timeout=120)
    yield server
    server.stop(grace_seconds=2)


@pytest.fixture
def served_url(served) -> str:
    return f"http://127.0.0.1:{served.rest_port}"


# ---------------------------------------------------------------------------------------------
# The document itself


def test_the_document_is_valid_openapi_3_1():
    document = load_document()
    assert document["openapi"].startswith("3.1.")
    validate_openapi(document)

    broken = copy.deepcopy(document)  # a path parameter that the operation does not declare
    status = broken["paths"].pop("/v1/models/{model_name}")
    broken["paths"]["/v1/models/{model}"] = status
    with pytest.raises(OpenAPIValidationError):
        validate_openapi(broken)


def test_the_document_agrees_with_the_contract():
    document = load_document()
    schemas = document["components"]["schemas"]
    assert schemas["ModelName"]["enum"] == [contract.MODEL_NAME]
    assert [urlsplit(server["url"]).port for server in document["servers"]] == [contract.REST_PORT]
    assert document["x-grpc-port"] == contract.GRPC_PORT
    assert schemas["SignatureName"]["default"] == contract.SIGNATURE_NAME
    assert schemas["SentimentLabel"]["enum"] == list(contract.LABELS)

    # The request names the one input; the answers name the outputs, in both formats.
    named_row = schemas["ReviewInstance"]["oneOf"][1]
    assert named_row["required"] == [contract.INPUT_KEY]
    named_columns = schemas["ColumnarPredictRequest"]["properties"]["inputs"]["oneOf"][1]
    assert named_columns["required"] == [contract.INPUT_KEY]
    assert set(schemas["PredictionRow"]["properties"]) == set(contract.OUTPUT_KEYS)
    columns = schemas["ColumnarPredictResponse"]["properties"]["outputs"]["properties"]
    assert set(columns) == set(contract.OUTPUT_KEYS)

    # The metadata's serving_default signature is the contract's, dtype by dtype.
    signatures = schemas["MetadataResponse"]["properties"]["metadata"]["properties"]
    signature_def = signatures["signature_def"]["properties"]["signature_def"]
    assert (
        signature_def["required"] == list(signature_def["properties"]) == [contract.SIGNATURE_NAME]
    )
    signature = schemas["ServingDefaultSignature"]["allOf"][1]["properties"]
    assert signature["method_name"]["const"] == contract.PREDICT_METHOD_NAME
    for kind, expected in (
        ("inputs", contract.EXPECTED_INPUTS),
        ("outputs", contract.EXPECTED_OUTPUTS),
    ):
        assert set(signature[kind]["required"]) == set(expected)
        for key, (dtype, shape) in expected.items():
            tensor = schemas[signature[kind]["properties"][key]["$ref"].rsplit("/", 1)[1]]
            constraints = tensor["allOf"][1]["properties"]
            assert constraints["dtype"]["const"] == dtype
            dims = constraints["tensor_shape"]["properties"]["dim"]["prefixItems"]
            assert [dim["properties"]["size"]["const"] for dim in dims] == [str(s) for s in shape]

    assert [path for path in document["paths"] if not path.startswith("/v1/")] == [
        contract.METRICS_PATH
    ]


# ---------------------------------------------------------------------------------------------
# Requests and answers against the document (jsonschema)


@dataclass(frozen=True)
class Exchange:
    """One request and its answer, as plain values."""

    method: str
    path: str
    request_body: Any
    status: int
    content_type: str
    response_body: Any

    @classmethod
    def from_response(cls, response: requests.Response) -> Exchange:
        request = response.request
        body = request.body
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return cls(
            method=request.method,
            path=unquote(urlsplit(request.url).path),
            request_body=json.loads(body) if body else None,
            status=response.status_code,
            content_type=media_type,
            response_body=response.json() if media_type == "application/json" else response.text,
        )


class DocumentChecker:
    """Checks exchanges against an OpenAPI 3.1 document: the route, the path parameters and the
    JSON body of the request, then the status code, content type and body of the answer."""

    def __init__(self, document: dict):
        self.document = document
        self._registry = Registry().with_resource(
            DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
        )
        # (method, route regex, JSON pointer of the operation); parameters match what TF
        # Serving's routes match, anything but "/" and ":".
        self._routes = []
        for template, path_item in document["paths"].items():
            pattern = "".join(
                f"(?P<{part[1:-1]}>[^/:]+)" if part.startswith("{") else re.escape(part)
                for part in re.split(r"(\{[^}]+\})", template)
            )
            for method in HTTP_METHODS & set(path_item):
                pointer = f"/paths/{_escape(template)}/{method}"
                self._routes.append((method.upper(), re.compile(pattern), pointer))

    def operation_id(self, method: str, path: str) -> str | None:
        route = self._route(method, path)
        return None if route is None else self._at(route[0])["operationId"]

    def problems(self, exchange: Exchange) -> list[str]:
        """What in the exchange the document does not allow (empty when it conforms)."""
        return self.request_problems(exchange) + self.response_problems(exchange)

    def request_problems(self, exchange: Exchange) -> list[str]:
        """The route, the path parameters and the JSON body of the request."""
        where = f"{exchange.method} {exchange.path}"
        route = self._route(exchange.method, exchange.path)
        if route is None:
            return [f"{where}: no operation of the document has this route"]
        pointer, parameters = route
        operation = self._at(pointer)
        problems = []
        for index in range(len(operation.get("parameters", []))):
            parameter, parameter_pointer = self._follow(f"{pointer}/parameters/{index}")
            schema, _ = self._follow(f"{parameter_pointer}/schema")
            value: Any = parameters[parameter["name"]]
            if schema.get("type") == "integer" and value.isdigit():
                value = int(value)
            problems += self._schema_problems(
                f"{where}: parameter {parameter['name']}", value, f"{parameter_pointer}/schema"
            )
        if "requestBody" in operation:
            body, body_pointer = self._follow(f"{pointer}/requestBody")
            if exchange.request_body is None:
                if body.get("required"):
                    problems.append(f"{where}: the request has no body")
            else:
                problems += self._schema_problems(
                    f"{where}: request body",
                    exchange.request_body,
                    f"{body_pointer}/content/application~1json/schema",
                )
        return problems

    def response_problems(self, exchange: Exchange) -> list[str]:
        """The status code, the content type and the body of the answer."""
        where = f"{exchange.method} {exchange.path}"
        route = self._route(exchange.method, exchange.path)
        if route is None:
            return [f"{where}: no operation of the document has this route"]
        pointer, _ = route
        status = str(exchange.status)
        if status not in self._at(pointer)["responses"]:
            return [f"{where}: status {status} is not documented"]
        response, response_pointer = self._follow(f"{pointer}/responses/{status}")
        if exchange.content_type not in response.get("content", {}):
            return [f"{where}: {status} with undocumented {exchange.content_type!r}"]
        return self._schema_problems(
            f"{where}: {status} body",
            exchange.response_body,
            f"{response_pointer}/content/{_escape(exchange.content_type)}/schema",
        )

    def _route(self, method: str, path: str) -> tuple[str, dict[str, str]] | None:
        for route_method, pattern, pointer in self._routes:
            if route_method == method and (match := pattern.fullmatch(path)):
                return pointer, match.groupdict()
        return None

    def _at(self, pointer: str) -> Any:
        node: Any = self.document
        for part in pointer.split("/")[1:]:
            key = part.replace("~1", "/").replace("~0", "~")
            node = node[int(key)] if isinstance(node, list) else node[key]
        return node

    def _follow(self, pointer: str) -> tuple[Any, str]:
        """The object at ``pointer`` with its $ref chain followed, and where it lives."""
        node = self._at(pointer)
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self._at(pointer)
        return node, pointer

    def _schema_problems(self, what: str, instance: Any, schema_pointer: str) -> list[str]:
        """The most relevant validation error (jsonschema's best match), if any."""
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"{DOCUMENT_URI}#{quote(schema_pointer)}"}, registry=self._registry
        )
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
        return [] if error is None else [f"{what}: {error.message} (at {error.json_path})"]


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def recording_session(responses: list[requests.Response]) -> requests.Session:
    """A requests session that keeps every response (and through it, its request)."""
    session = requests.Session()
    session.hooks["response"].append(lambda response, *args, **kwargs: responses.append(response))
    return session


# Requests the REST client does not make, with the status the server must answer: together
# with the client's calls they reach every operation of the document.
DIRECT_REQUESTS = [
    ("GET", f"/v1/models/imdb/labels/{LABEL}", None, 200),
    ("GET", "/v1/models/nosuch", None, 404),
    ("GET", "/v1/models/imdb/versions/99999999999999999999", None, 400),
    ("GET", "/v1/models/imdb/versions/99/metadata", None, 404),
    ("POST", "/v1/models/imdb:predict", {"inputs": {"review": [POSITIVE, NEGATIVE]}}, 200),
    ("POST", "/v1/models/imdb/versions/1:predict", {"inputs": [POSITIVE]}, 200),
    ("POST", f"/v1/models/imdb/labels/{LABEL}:predict", {"inputs": []}, 200),
    ("POST", "/v1/models/imdb:predict", {"instances": [{"b64": "eA=="}, {"b64": "eQ=="}]}, 200),
    ("POST", "/v1/models/imdb:predict", {"instances": []}, 400),
    ("POST", "/v1/models/imdb:predict", {"instances": [1.0]}, 400),
    ("POST", "/v1/models/imdb:predict", {"signature_name": "nope", "instances": ["x"]}, 400),
    # A signature without inputs: a 500 until the REST front end refused it as TF Serving does.
    (
        "POST",
        "/v1/models/imdb:predict",
        {"signature_name": "__saved_model_init_op", "instances": ["x"]},
        400,
    ),
    ("POST", "/v1/models/imdb:predict", {"instances": ["x" * MAX_REQUEST_BYTES]}, 413),
    ("POST", "/v1/models/imdb:classify", {"examples": [{"review": POSITIVE}]}, 400),
    ("POST", "/v1/models/imdb/versions/1:classify", {"examples": [{"review": "x"}]}, 400),
    ("POST", f"/v1/models/imdb/labels/{LABEL}:classify", {"examples": [{"n": 1}]}, 400),
    ("POST", "/v1/models/imdb:regress", {"examples": [{"review": POSITIVE}]}, 400),
    ("POST", "/v1/models/imdb/versions/99:regress", {"examples": [{"review": "x"}]}, 404),
    ("POST", f"/v1/models/imdb/labels/{LABEL}:regress", {"examples": [{"f": 1.5}]}, 400),
    ("GET", contract.METRICS_PATH, None, 200),
]


def test_the_rest_clients_requests_and_the_servers_answers_match_the_document(served_url):
    checker = DocumentChecker(load_document())
    client_responses: list[requests.Response] = []
    with RestClient(served_url, session=recording_session(client_responses)) as client:
        client.status()
        client.status(version=1)
        client.metadata()
        client.metadata(version=1)
        client.metadata(label=LABEL)
        client.predict([POSITIVE, NEGATIVE])
        client.predict([POSITIVE], version=1)
        client.predict([NEGATIVE, "", "ünïcödé 🎬"], label=LABEL)
        for call in (lambda: client.predict(["x"], version=99), lambda: client.status(99)):
            with pytest.raises(RequestError):
                call()
    direct_responses: list[requests.Response] = []
    session = recording_session(direct_responses)
    for method, path, body, _ in DIRECT_REQUESTS:
        data = None if body is None else json.dumps(body)
        session.request(method, served_url + path, data=data, timeout=30)

    sent = [Exchange.from_response(response) for response in client_responses]
    direct = [Exchange.from_response(response) for response in direct_responses]
    # Everything the client sends, and every answer (the direct requests are partly invalid
    # on purpose: only their answers are checked).
    assert [p for exchange in sent for p in checker.problems(exchange)] == []
    assert [p for exchange in direct for p in checker.response_problems(exchange)] == []
    assert [exchange.status for exchange in direct] == [status for *_, status in DIRECT_REQUESTS]
    answered = {checker.operation_id(e.method, e.path) for e in sent + direct}
    every_operation = {
        operation["operationId"]
        for path_item in checker.document["paths"].values()
        for method, operation in path_item.items()
        if method in HTTP_METHODS
    }
    assert answered == every_operation

    # The check is live: a wrong answer, an undocumented status, a wrong request and a wrong
    # document all fail.
    predicted = next(e for e in sent if e.status == 200 and e.path.endswith(":predict"))
    wrong_label = {"predictions": [{"label": "maybe", "probability": 0.5}]}
    assert "'maybe' is not one of" in " ".join(
        checker.problems(replace(predicted, response_body=wrong_label))
    )
    too_likely = {"predictions": [{"label": "positive", "probability": 1.5}]}
    assert checker.problems(replace(predicted, response_body=too_likely))
    assert checker.problems(replace(predicted, status=418)) == [
        f"POST {predicted.path}: status 418 is not documented"
    ]
    misnamed = {"instances": [{"text": POSITIVE}]}
    assert checker.problems(replace(predicted, request_body=misnamed))
    status = next(e for e in sent if e.path == "/v1/models/imdb" and e.status == 200)
    stricter = load_document()
    stricter["components"]["schemas"]["ModelVersionStatus"]["required"].append("loaded_at")
    assert DocumentChecker(stricter).problems(status)


# ---------------------------------------------------------------------------------------------
# Fuzzing with schemathesis


@dataclass(frozen=True)
class FuzzSettings:
    """One bounded schemathesis run. ``make fuzz`` sets FUZZ_EXAMPLES (and may set FUZZ_SEED,
    FUZZ_TIMEOUT_SECONDS) for a longer run."""

    # Test cases per operation and phase (examples, coverage, fuzzing).
    examples: int = 10
    # Hypothesis' seed, so that a run can be repeated case by case.
    seed: int = 20261203
    # The whole run must finish within this many seconds.
    timeout_seconds: float = 300.0

    @classmethod
    def from_environment(cls) -> FuzzSettings:
        defaults = cls()
        return cls(
            examples=int(os.environ.get("FUZZ_EXAMPLES", defaults.examples)),
            seed=int(os.environ.get("FUZZ_SEED", defaults.seed)),
            timeout_seconds=float(os.environ.get("FUZZ_TIMEOUT_SECONDS", defaults.timeout_seconds)),
        )


def run_schemathesis(
    document: Path, base_url: str, settings: FuzzSettings, report: Path, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    """``schemathesis run`` on one worker; returns the process and its JSON report."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(document),
        f"--url={base_url}",
        f"--max-examples={settings.examples}",
        f"--seed={settings.seed}",
        f"--checks={','.join(FUZZ_CHECKS)}",
        "--workers=1",
        "--request-timeout=30",
        "--generation-database=none",
        "--warnings=off",
        "--no-color",
        "--report=json",
        f"--report-json-path={report}",
        *extra,
    ]
    try:
        process = subprocess.run(
            command,
            cwd=report.parent,
            capture_output=True,
            text=True,
            timeout=settings.timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"schemathesis did not finish within {settings.timeout_seconds:.0f} s")
    if not report.exists():
        pytest.fail(f"schemathesis wrote no report (exit {process.returncode}):\n{process.stdout}")
    return process, json.loads(report.read_text())


def test_fuzzing_finds_no_server_error_and_no_answer_outside_the_document(
    served, served_url, tmp_path
):
    settings = FuzzSettings.from_environment()
    process, report = run_schemathesis(OPENAPI_PATH, served_url, settings, tmp_path / "run.json")
    cases = report["test_cases"]
    print("\n" + process.stdout[process.stdout.find("API Operations:") :].strip())
    print(
        f"schemathesis: {cases['generated']} cases over {report['operations']['tested']} "
        f"operations, {cases['with_failures']} failing ({cases['unique_failures']} unique), "
        f"{cases['errored']} errored, {report['running_time']:.1f} s; seed {settings.seed}, "
        f"{settings.examples} examples per operation"
    )
    summary = process.stdout[-6000:]
    assert process.returncode == 0, summary
    assert report["failures"] == [] and report["errors"] == [], summary
    assert report["operations"]["tested"] == report["operations"]["total"] == 16

    # The checks are live: a document that demands a field the server never sends fails.
    stricter = load_document()
    stricter["components"]["schemas"]["ModelVersionStatus"]["required"].append("loaded_at")
    stricter_path = tmp_path / "stricter.yaml"
    stricter_path.write_text(yaml.safe_dump(stricter))
    process, report = run_schemathesis(
        stricter_path,
        served_url,
        FuzzSettings(examples=1, seed=settings.seed),
        tmp_path / "stricter.json",
        "--include-operation-id=getModelStatus",
        "--phases=fuzzing",
        "--mode=positive",
    )
    assert process.returncode != 0 and report["failures"], process.stdout[-3000:]

    # The server is still serving, over both transports.
    with RestClient(served_url) as client:
        assert client.predict([POSITIVE, NEGATIVE])[0].label == contract.POSITIVE_LABEL
    with GrpcClient(f"127.0.0.1:{served.grpc_port}") as client:
        assert client.predict([POSITIVE])[0].label == contract.POSITIVE_LABEL
