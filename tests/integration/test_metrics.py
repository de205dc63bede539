"""The local server's Prometheus endpoint: TF Serving's path rules, names, labels and counts."""

from __future__ import annotations

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from serving import tf_serving_metrics
from serving.client import GrpcClient, RequestError
from serving.contract import METRICS_PATH, REQUEST_COUNT_METRIC
from serving.model_server.metrics import LOCAL_BATCH_QUEUED_TASKS
from tests.helpers import free_port


def samples(rest: str) -> dict[tuple, float]:
    response = requests.get(rest + METRICS_PATH, timeout=10)
    assert response.status_code == 200 and response.headers["Content-Type"] == "text/plain"
    assert f"# TYPE {REQUEST_COUNT_METRIC} untyped" in response.text
    assert "# TYPE :tensorflow:serving:request_latency histogram" in response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_counts_match_the_requests_sent(monitored_server):
    rest = f"http://127.0.0.1:{monitored_server.rest_port}"
    predict = f"{rest}/v1/models/imdb:predict"
    for _ in range(3):
        assert requests.post(predict, json={"instances": ["great film"]}, timeout=30).ok
    for _ in range(2):
        assert requests.post(predict, json={"instances": [1]}, timeout=30).status_code == 400
    with GrpcClient(f"127.0.0.1:{monitored_server.grpc_port}") as client:
        client.predict(["great film"])
        client.predict(["dull film", "fine"])
    target = f"127.0.0.1:{monitored_server.grpc_port}"
    with GrpcClient(target, "nosuch") as client, pytest.raises(RequestError):
        client.predict(["great film"])

    found = samples(rest)
    count = REQUEST_COUNT_METRIC
    assert found[(count, (("model_name", "imdb"), ("status", "OK")))] == 5
    assert found[(count, (("model_name", "imdb"), ("status", "INVALID_ARGUMENT")))] == 2
    assert found[(count, (("model_name", "nosuch"), ("status", "NOT_FOUND")))] == 1
    latency = ":tensorflow:serving:request_latency_count"
    rest_labels = (("API", "predict"), ("entrypoint", "REST"), ("model_name", "imdb"))
    grpc_labels = (("API", "Predict"), ("entrypoint", "GRPC"), ("model_name", "imdb"))
    assert found[(latency, rest_labels)] == 3 and found[(latency, grpc_labels)] == 2
    infinity = (
        ":tensorflow:serving:request_latency_bucket",
        (*rest_labels[:2], ("le", "+Inf"), rest_labels[2]),
    )
    assert found[infinity] == 3
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert found[(runtime, (("API", "predict"), ("model_name", "imdb"), ("runtime", "TF1")))] == 3
    loads = [v for (name, labels), v in found.items() if name.endswith("load_attempt_count")]
    assert loads == [1.0]
    assert any(name == ":tensorflow:serving:model_warmup_latency_count" for name, _ in found)
    assert found[(LOCAL_BATCH_QUEUED_TASKS, ())] == 0


def test_the_endpoint_writes_tf_servings_names_and_its_one_gauge(monitored_server):
    rest = f"http://127.0.0.1:{monitored_server.rest_port}"
    assert requests.post(
        f"{rest}/v1/models/imdb:predict", json={"instances": ["great film"]}, timeout=30
    ).ok
    response = requests.get(rest + METRICS_PATH, timeout=10)
    families = {family.name: family for family in text_string_to_metric_families(response.text)}
    # prometheus_client's parser names an untyped family by its sample name.
    names = set(families) - {LOCAL_BATCH_QUEUED_TASKS}
    assert LOCAL_BATCH_QUEUED_TASKS in families
    assert families[LOCAL_BATCH_QUEUED_TASKS].type == "gauge"
    listed = {name for name, metric in tf_serving_metrics.METRICS.items() if metric.local_server}
    # Everything else is in TF Serving's list, marked as emitted here, with its type and labels.
    assert names == listed
    for name in names:
        metric = tf_serving_metrics.METRICS[name]
        family = families[name]
        assert family.type in (metric.kind, "unknown"), name
        for sample in family.samples:
            assert sample.name in metric.series, sample.name
            assert set(sample.labels) - {"le"} == set(metric.labels), sample.name


def test_the_metrics_path_follows_tf_servings_rules(monitored_server, local_server):
    rest = f"http://127.0.0.1:{monitored_server.rest_port}"
    assert requests.post(rest + METRICS_PATH, timeout=10).status_code == 200  # any method
    with_query = requests.get(rest + METRICS_PATH + "?x=1", timeout=10)
    assert with_query.status_code == 400
    assert with_query.text == f"Unexpected path: {METRICS_PATH}?x=1. Should be {METRICS_PATH}"
    assert requests.get(rest + METRICS_PATH + "/", timeout=10).status_code == 404
    # Without --monitoring_config_file the path is an ordinary unknown path: the HTML 404.
    plain = requests.get(f"http://127.0.0.1:{local_server.rest_port}{METRICS_PATH}", timeout=10)
    assert plain.status_code == 404 and "<html>" in plain.text


def test_a_bad_monitoring_config_stops_the_start(tmp_path):
    from serving.model_server.server import ModelServer, ServerOptions, StartupError

    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enabled: true }")
    with pytest.raises(StartupError, match="enabled"):
        ModelServer(
            ServerOptions(
                rest_api_port=free_port(),
                model_name="imdb",
                model_base_path=str(tmp_path),
                monitoring_config_file=str(config),
            )
        )
