"""The local server's REST and gRPC API against TF Serving's contract (docs/serving.md)."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving import contract
from serving.client import GrpcClient, RestClient
from serving.savedmodel import SessionBundle

POSITIVE = "A wonderful, brilliant film. I loved every minute of it."
NEGATIVE = "An awful, boring film. A complete waste of time."


@pytest.fixture
def model_url(rest_url) -> str:
    return f"{rest_url}/v1/models/imdb"


def post(url: str, body, **kwargs) -> requests.Response:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return requests.post(url, data=data, timeout=30, **kwargs)


def error_of(response: requests.Response) -> str:
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert list(document) == ["error"]
    return document["error"]


# ---------------------------------------------------------------------------------------------
# REST: status and metadata


def test_status_json_shape(model_url):
    response = requests.get(model_url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert requests.get(f"{model_url}/versions/1", timeout=10).status_code == 200


def test_metadata_json_shape(model_url):
    document = requests.get(f"{model_url}/metadata", timeout=10).json()
    assert document["model_spec"] == {"name": "imdb", "signature_name": "", "version": "1"}
    signature = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    review = signature["inputs"]["review"]
    assert review["dtype"] == "DT_STRING"
    assert review["tensor_shape"] == {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False}
    assert signature["outputs"]["probability"]["dtype"] == "DT_FLOAT"
    assert signature["outputs"]["label"]["dtype"] == "DT_STRING"
    assert "__saved_model_init_op" in document["metadata"]["signature_def"]["signature_def"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/models/nosuch", 404, "Could not find any versions of model nosuch"),
        ("/v1/models/imdb/versions/99", 404, "Could not find version 99 of model imdb"),
        ("/v1/models/nosuch/metadata", 404, "Servable not found for request: Latest(nosuch)"),
        (
            "/v1/models/imdb/versions/99/metadata",
            404,
            "Servable not found for request: Specific(imdb, 99)",
        ),
        ("/v1/models/imdb/labels/nope/metadata", 400, "Unrecognized servable version label: nope"),
        ("/v1/models", 400, "Missing model name in request."),
        ("/v1/foo", 400, "Malformed request: GET /v1/foo"),
        ("/v1/models/imdb/", 400, "Malformed request: GET /v1/models/imdb/"),
        ("/v1/models/imdb/versions/HELLO", 400, "Malformed request"),
    ],
)
def test_get_errors(rest_url, path, status, message):
    response = requests.get(rest_url + path, timeout=10)
    assert response.status_code == status
    assert message in error_of(response)


@pytest.mark.parametrize("path", ["/", "/v1", "/healthz", "/v2/health/ready"])
def test_paths_outside_v1_get_an_html_404(rest_url, path):
    response = requests.get(rest_url + path, timeout=10)
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")


def test_other_methods_are_malformed(model_url):
    for method in ("PUT", "DELETE", "PATCH"):
        response = requests.request(method, model_url, timeout=10)
        assert response.status_code == 400
        assert error_of(response) == f"Malformed request: {method} /v1/models/imdb"


# ---------------------------------------------------------------------------------------------
# REST: predict


def test_predict_row_format(model_url):
    response = post(f"{model_url}:predict", {"instances": [POSITIVE, NEGATIVE]})
    assert response.status_code == 200
    rows = response.json()["predictions"]
    assert [set(row) for row in rows] == [{"probability", "label"}] * 2
    assert rows[0]["label"] == "positive" and rows[1]["label"] == "negative"
    assert rows[0]["probability"] > 0.5 > rows[1]["probability"]


def test_predict_columnar_named_b64_and_versions_agree(model_url):
    encoded = base64.b64encode(NEGATIVE.encode()).decode()
    columnar = post(
        f"{model_url}/versions/1:predict", {"inputs": {"review": [POSITIVE, {"b64": encoded}]}}
    ).json()
    assert set(columnar) == {"outputs"}
    rows = post(f"{model_url}:predict", {"instances": [{"review": POSITIVE}, NEGATIVE]})
    assert rows.status_code == 400  # mixing objects and values is refused
    rows = post(f"{model_url}:predict", {"instances": [{"review": POSITIVE}, {"review": NEGATIVE}]})
    predictions = rows.json()["predictions"]
    assert columnar["outputs"]["label"] == [p["label"] for p in predictions]
    assert columnar["outputs"]["probability"] == [p["probability"] for p in predictions]


def test_predict_matches_the_session_directly(model_url, exported_version):
    texts = [POSITIVE, NEGATIVE, "", "ünïcödé 🎬 <br /> review"]
    served = post(f"{model_url}:predict", {"instances": texts}).json()["predictions"]
    bundle = SessionBundle(exported_version)
    try:
        direct = bundle.run("serving_default", {"review": np.array(texts, dtype=object)})
    finally:
        bundle.close()
    np.testing.assert_allclose(
        [row["probability"] for row in served], direct["probability"], rtol=1e-6
    )
    assert [row["label"] for row in served] == [v.decode() for v in direct["label"]]


def test_gzip_request_body(model_url):
    body = gzip.compress(json.dumps({"instances": [POSITIVE]}).encode())
    response = post(f"{model_url}:predict", body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "positive"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "JSON Parse error: The document is empty"),
        (b"{instances: [1, 2]}", 400, "JSON Parse error: Invalid value"),
        (b'["not", "an", "object"]', 400, "Is not object"),
        (
            {"signature_name": 100, "instances": ["x"]},
            400,
            "'signature_name' key must be a string value.",
        ),
        ({"nothing": 1}, 400, "Missing 'inputs' or 'instances' key"),
        (
            {"instances": ["x"], "inputs": ["x"]},
            400,
            "expecting only one of 'inputs' or 'instances'",
        ),
        ({"instances": "x"}, 400, "Expecting 'instances' to be an list/array"),
        ({"instances": []}, 400, "No values in 'instances' array"),
        ({"instances": [1.0]}, 400, "Type: Number is not of expected type: string"),
        ({"instances": [None]}, 400, "Type: Null is not of expected type: string"),
        ({"instances": [{"b64": "%%%"}]}, 400, "Unable to base64 decode"),
        ({"instances": [{"b64": "-_-_"}]}, 400, "Unable to base64 decode"),
        ({"instances": [{"text": "x"}]}, 400, "does not have named input: text"),
        ({"instances": [["a"], ["b", "c"]]}, 400, "Expecting shape"),
        ({"instances": [["a"], ["b"]]}, 400, "must have rank 1"),
        ({"inputs": {"text": ["x"]}}, 400, "Missing named input: review in 'inputs' object."),
        ({"inputs": "a lone scalar"}, 400, "must have rank 1"),
        (
            {"signature_name": "nope", "instances": ["x"]},
            400,
            'Serving signature name: "nope" not found',
        ),
    ],
)
def test_predict_errors(model_url, body, status, message):
    response = post(f"{model_url}:predict", body)
    assert response.status_code == status
    assert message in error_of(response)


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v1/models/nosuch:predict", 404, "Servable not found for request: Latest(nosuch)"),
        (
            "/v1/models/imdb/versions/99:predict",
            404,
            "Servable not found for request: Specific(imdb, 99)",
        ),
        ("/v1/models/imdb/labels/nope:predict", 400, "Unrecognized servable version label: nope"),
        ("/v1/models/imdb/versions/99999999999999999999:predict", 400, "Failed to convert version"),
        ("/v1/models/imdb:classify", 400, "key 'examples' is expected and was not found"),
        ("/v1/models:predict", 400, "Malformed request: POST /v1/models:predict"),
        ("/v1/models/imdb/metadata", 400, "Malformed request: POST"),
    ],
)
def test_predict_routing_errors(rest_url, path, status, message):
    response = post(rest_url + path, {"instances": ["x"]})
    assert response.status_code == status
    assert message in error_of(response)


def test_parse_errors_come_before_model_lookup(rest_url):
    response = post(f"{rest_url}/v1/models/nosuch:predict", b"{broken")
    assert response.status_code == 400


def test_predict_reads_the_inputs_after_the_model_lookup(rest_url, model_url):
    # TF Serving's FillPredictRequestFromJson: the object and signature_name, the servable,
    # then 'instances' or 'inputs'.
    assert post(f"{rest_url}/v1/models/nosuch:predict", ["x"]).status_code == 400
    assert post(f"{rest_url}/v1/models/nosuch:predict", {"signature_name": 1}).status_code == 400
    assert post(f"{rest_url}/v1/models/nosuch:predict", {"nothing": 1}).status_code == 404
    assert post(f"{model_url}:predict", {"nothing": 1}).status_code == 400


@pytest.mark.parametrize("verb", ["classify", "regress"])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (["x"], "Is not object"),
        ({"signature_name": 1, "examples": [{}]}, "'signature_name' key must be a string value."),
        ({"instances": ["x"]}, "When method is classify, key 'examples' is expected"),
        ({"examples": {"review": "x"}}, "Expecting 'examples' value to be an list/array"),
        ({"examples": []}, "'examples' value is an empty array"),
        ({"examples": ["x"]}, "Example must be JSON object but got JSON String"),
        ({"examples": [True]}, "Example must be JSON object but got JSON True"),
        ({"context": [], "examples": [{}]}, "Example must be JSON object but got JSON Array"),
        ({"examples": [{"f": None}]}, "Feature: f has element with unexpected JSON type: Null"),
        ({"examples": [{"f": [[1]]}]}, "Feature: f has element with unexpected JSON type: Array"),
        ({"examples": [{"f": {"x": 1}}]}, "unexpected JSON type: Object"),
        (
            {"examples": [{"f": ["a", 1]}]},
            "Unexpected element type in feature: f expecting type: bytes",
        ),
        (
            {"examples": [{"f": [1, 1.5]}]},
            "Unexpected element type in feature: f expecting type: int64",
        ),
        (
            # rapidjson reads 2 as an integer: a float list cannot take it.
            {"examples": [{"f": [0.5, 2]}]},
            "Unexpected element type in feature: f expecting type: float",
        ),
        ({"examples": [{"f": [True, "a"]}]}, "expecting type: int64"),
        ({"examples": [{"f": 2**63}]}, "Feature: f has uint64 element. Only int64 is supported."),
        ({"examples": [{"f": 1e300}]}, "to float without loss of precision."),
        ({"examples": [{"f": {"b64": "%%%"}}]}, "Unable to base64 decode"),
    ],
)
def test_classify_and_regress_check_the_body_before_the_model_lookup(rest_url, verb, body, message):
    # TF Serving's FillClassifyRegressRequestFromJson runs before the servable lookup, so a bad
    # body is 400 even for a model that does not exist.
    response = post(f"{rest_url}/v1/models/nosuch:{verb}", body)
    assert response.status_code == 400
    assert message in error_of(response)


@pytest.mark.parametrize("verb", ["classify", "regress"])
def test_classify_and_regress_well_formed_bodies_reach_the_model_lookup(rest_url, verb):
    body = {
        "signature_name": "",
        "context": {"lang": "en"},
        "examples": [{"review": [POSITIVE, {"b64": "eA=="}], "n": [1, True], "w": [0.5, 2.0]}],
    }
    assert post(f"{rest_url}/v1/models/nosuch:{verb}", body).status_code == 404
    response = post(f"{rest_url}/v1/models/imdb:{verb}", body)
    assert response.status_code == 400
    assert "signature method_name to be tensorflow/serving/" in error_of(response)


def test_oversized_request_is_refused_and_server_survives(model_url, local_server):
    big = {"instances": ["x" * 1000] * (local_server.options.max_request_bytes // 1000 + 10)}
    response = post(f"{model_url}:predict", big)
    assert response.status_code == 413
    assert post(f"{model_url}:predict", {"instances": [POSITIVE]}).status_code == 200


def test_large_batch_and_deep_nesting(model_url):
    texts = [f"review number {i}: {POSITIVE if i % 2 else NEGATIVE}" for i in range(2000)]
    response = post(f"{model_url}:predict", {"instances": texts})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 2000
    nested = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert post(f"{model_url}:predict", nested).status_code == 400
    assert post(f"{model_url}:predict", {"instances": [POSITIVE]}).status_code == 200


def test_cors_preflight(model_url):
    ok = requests.options(model_url, headers={"Origin": "https://example.org"}, timeout=10)
    refused = requests.options(model_url, timeout=10)
    assert (ok.status_code, refused.status_code) == (200, 400)


def test_concurrent_requests_are_served_in_parallel(rest_url, grpc_target):
    def rest_call(i: int) -> str:
        with RestClient(rest_url) as client:
            return client.predict([POSITIVE if i % 2 else NEGATIVE])[0].label

    grpc_client = GrpcClient(grpc_target)
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            rest_labels = list(pool.map(rest_call, range(64)))
            grpc_labels = list(
                pool.map(
                    lambda i: grpc_client.predict([POSITIVE if i % 2 else NEGATIVE])[0].label,
                    range(64),
                )
            )
    finally:
        grpc_client.close()
    expected = ["positive" if i % 2 else "negative" for i in range(64)]
    assert rest_labels == expected and grpc_labels == expected


# ---------------------------------------------------------------------------------------------
# gRPC


@pytest.fixture
def channel(grpc_target):
    with grpc.insecure_channel(grpc_target) as channel:
        yield channel


def string_tensor(values: list[str], shape: list[int] | None = None) -> tensor_pb2.TensorProto:
    return tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (shape or [len(values)])]
        ),
        string_val=[v.encode() for v in values],
    )


def test_grpc_predict_echoes_model_spec_and_types_outputs(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.inputs["review"].CopyFrom(string_tensor([POSITIVE, NEGATIVE]))
    response = stub.Predict(request, timeout=30)
    assert response.model_spec.name == "imdb"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    probability = response.outputs["probability"]
    assert probability.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in probability.tensor_shape.dim] == [2]
    assert (
        len(probability.float_val) == 2
        and probability.float_val[0] > 0.5 > probability.float_val[1]
    )
    assert list(response.outputs["label"].string_val) == [b"positive", b"negative"]

    request.output_filter.append("label")
    assert set(stub.Predict(request, timeout=30).outputs) == {"label"}


def grpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=30)
    return error.value


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (
            lambda r: r.ClearField("model_spec"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Missing ModelSpec",
        ),
        (
            lambda r: setattr(r.model_spec, "name", ""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ModelSpec has no name",
        ),
        (
            lambda r: setattr(r.model_spec, "name", "x"),
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(x)",
        ),
        (
            lambda r: r.model_spec.version.__setattr__("value", 99),
            grpc.StatusCode.NOT_FOUND,
            "Specific(imdb, 99)",
        ),
        (
            lambda r: setattr(r.model_spec, "version_label", "nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Unrecognized servable version label: nope",
        ),
        (
            lambda r: setattr(r.model_spec, "signature_name", "nope"),
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            lambda r: r.inputs["extra"].CopyFrom(string_tensor(["x"])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "input size does not match signature: 2!=1",
        ),
        (
            lambda r: r.inputs["review"].CopyFrom(
                tensor_pb2.TensorProto(
                    dtype=types_pb2.DT_FLOAT,
                    float_val=[1.0],
                    tensor_shape=tensor_shape_pb2.TensorShapeProto(
                        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
                    ),
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expects DT_STRING",
        ),
        (
            lambda r: r.inputs["review"].CopyFrom(string_tensor(["a", "b"], [2, 1])),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must have rank 1",
        ),
        (
            lambda r: r.inputs["review"].CopyFrom(
                tensor_pb2.TensorProto(
                    dtype=types_pb2.DT_STRING,
                    tensor_shape=tensor_shape_pb2.TensorShapeProto(
                        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=2)]
                    ),
                    tensor_content=b"\x01a",  # one string where the shape holds two
                )
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tensor parsing error: review",
        ),
        (
            lambda r: r.output_filter.append("nope"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "output tensor alias not found in signature: nope",
        ),
        (
            lambda r: r.output_filter.extend(["label", "label"]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "duplicate output tensor alias: label",
        ),
    ],
)
def test_grpc_predict_errors(channel, change, code, message):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.inputs["review"].CopyFrom(string_tensor([POSITIVE]))
    change(request)
    error = grpc_error(stub.Predict, request)
    assert error.code() == code
    assert message in error.details()


def test_grpc_renamed_input_is_refused(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.inputs["text"].CopyFrom(string_tensor([POSITIVE]))
    assert grpc_error(stub.Predict, request).code() == grpc.StatusCode.INVALID_ARGUMENT


def predicted_labels(channel, review: tensor_pb2.TensorProto) -> list[bytes]:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.inputs["review"].CopyFrom(review)
    return list(stub.Predict(request, timeout=30).outputs["label"].string_val)


def test_grpc_values_fill_the_shape_as_tensorflows_from_proto(channel):
    # tensor.cc FromProtoField: the first values when more were sent, the last value repeated
    # when fewer, the dtype's zero ("") when none; a shape without elements reads no value.
    assert predicted_labels(channel, string_tensor([POSITIVE], [0])) == []
    assert predicted_labels(channel, string_tensor([POSITIVE, NEGATIVE, POSITIVE], [2])) == [
        b"positive",
        b"negative",
    ]
    assert predicted_labels(channel, string_tensor([NEGATIVE, POSITIVE], [3])) == [
        b"negative",
        b"positive",
        b"positive",
    ]
    assert predicted_labels(channel, string_tensor([], [2])) == predicted_labels(
        channel, string_tensor(["", ""])
    )


def test_a_signature_without_inputs_is_refused_on_both_transports(model_url, channel):
    # REST refuses it in the JSON layer (json_tensor.cc); gRPC in the session, which cannot
    # fetch the init op's NoOp (subgraph.cc). Same code, TF Serving's two messages.
    name = "__saved_model_init_op"
    response = post(f"{model_url}:predict", {"signature_name": name, "instances": ["x"]})
    assert response.status_code == 400
    assert error_of(response) == f"Failed to get input map for signature: {name}"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.model_spec.signature_name = name
    error = grpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("Tried to fetch data for 'NoOp', which produces no output.")


def test_grpc_metadata(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "imdb"
    response = stub.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert signatures.signature_def["serving_default"].inputs["review"].dtype == types_pb2.DT_STRING

    request.ClearField("metadata_field")
    assert "at least one metadata_field" in grpc_error(stub.GetModelMetadata, request).details()
    request.metadata_field.append("foo")
    assert (
        "Metadata field foo is not supported"
        in grpc_error(stub.GetModelMetadata, request).details()
    )


def test_grpc_status(channel):
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "imdb"
    (status,) = stub.GetModelStatus(request, timeout=30).model_version_status
    assert (status.version, status.state, status.status.error_code) == (1, 30, 0)
    request.model_spec.name = "x"
    error = grpc_error(stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model x"


def test_grpc_health_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "tensorflow.serving.PredictionService"):
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_clients_agree_across_transports(rest_url, grpc_target):
    with RestClient(rest_url) as rest, GrpcClient(grpc_target) as grpc_client:
        metadata = rest.metadata()
        assert metadata == grpc_client.metadata()
        assert contract.signature_problems(metadata.inputs, metadata.outputs) == []
        assert rest.status() == grpc_client.status()
        rest_predictions = rest.predict([POSITIVE, NEGATIVE, "So-so."])
        grpc_predictions = grpc_client.predict([POSITIVE, NEGATIVE, "So-so."])
    for a, b in zip(rest_predictions, grpc_predictions, strict=True):
        assert a.label == b.label
        assert a.probability == pytest.approx(b.probability, abs=1e-6)


def test_oversized_grpc_message_is_refused_and_server_survives(channel, local_server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    count = local_server.options.max_request_bytes // 1000 + 10
    request.inputs["review"].CopyFrom(string_tensor(["x" * 1000] * count))
    assert grpc_error(stub.Predict, request).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    request.inputs["review"].CopyFrom(string_tensor([POSITIVE]))
    assert stub.Predict(request, timeout=30).outputs["label"].string_val == [b"positive"]


def test_garbage_on_the_sockets_does_not_take_the_server_down(local_server, model_url):
    payloads = [
        b"\x00\xff" * 5000,
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
        b"POST /v1 HTTP/9\r\n",
    ]
    for port in (local_server.rest_port, local_server.grpc_port):
        for payload in payloads:
            # The server may drop the connection at any point: only its survival counts.
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as connection,
                contextlib.suppress(OSError),
            ):
                connection.sendall(payload)
                connection.shutdown(socket.SHUT_WR)
                connection.recv(1024)
    assert post(f"{model_url}:predict", {"instances": [POSITIVE]}).status_code == 200
    with GrpcClient(f"127.0.0.1:{local_server.grpc_port}") as client:
        assert client.predict([POSITIVE])[0].label == "positive"


def test_an_empty_batch_gives_empty_outputs(model_url, channel):
    response = post(f"{model_url}:predict", {"inputs": {"review": []}})
    assert response.status_code == 200
    assert response.json() == {"outputs": {"label": [], "probability": []}}
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.inputs["review"].CopyFrom(string_tensor([], [0]))
    outputs = stub.Predict(request, timeout=30).outputs
    assert [d.size for d in outputs["probability"].tensor_shape.dim] == [0]
    assert list(outputs["label"].string_val) == []


def test_odd_reviews_over_grpc_get_predictions(channel):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    reviews = [b"", b" \t\n ", b"great", b"\xff\xfe not utf-8 \x80 great film", POSITIVE.encode()]
    request.inputs["review"].CopyFrom(string_tensor([], [len(reviews)]))
    request.inputs["review"].string_val.extend(reviews)
    outputs = stub.Predict(request, timeout=30).outputs
    probabilities = list(outputs["probability"].float_val)
    assert len(probabilities) == len(reviews)
    assert all(0.0 <= p <= 1.0 for p in probabilities)
    assert list(outputs["label"].string_val) == [
        contract.LABELS[int(p >= contract.DECISION_THRESHOLD)].encode() for p in probabilities
    ]
