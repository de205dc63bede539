"""A real Prometheus on loopback scrapes the local server and evaluates the rule file: every
series the dashboard and the alerts are built on appears, with the counts of the requests sent."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import requests
import yaml

from serving import contract, tf_serving_metrics
from serving.client import GrpcClient
from tests.helpers import PROJECT_ROOT, free_port, skip_or_fail, wait_for

RULES = PROJECT_ROOT / "k8s" / "monitoring" / "rules.yaml"
DASHBOARD = PROJECT_ROOT / "k8s" / "base" / "dashboards" / "grafana-dashboard.json"
CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [{rules}]
scrape_configs:
  - job_name: model-server
    metrics_path: {metrics_path}
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


@pytest.fixture
def prometheus(tmp_path, monitored_server):
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail("prometheus is not installed (make test installs Debian's prometheus as root)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        CONFIG.format(
            rules=json.dumps(str(RULES)),
            metrics_path=contract.METRICS_PATH,
            port=monitored_server.rest_port,
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
        try:
            return requests.get(f"{url}/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(ready, timeout=60, what="Prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def query(url: str, expr: str) -> list[dict]:
    response = requests.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["data"]["result"]


def scraped(url: str, status: str) -> float:
    found = query(url, f'{contract.REQUEST_COUNT_METRIC}{{status="{status}"}}')
    return float(found[0]["value"][1]) if found else 0.0


def test_prometheus_sees_the_requests_and_the_rules_evaluate(monitored_server, prometheus):
    rest = f"http://127.0.0.1:{monitored_server.rest_port}/v1/models/imdb:predict"
    wait_for(lambda: query(prometheus, 'up{job="model-server"} == 1'), 60, "a first scrape")
    # Two rounds of requests, each seen by a scrape: every counter then has grown, for rate().
    for _ in range(4):
        assert requests.post(rest, json={"instances": ["a great film"]}, timeout=30).ok
    assert requests.post(rest, json={"instances": [3]}, timeout=30).status_code == 400
    with GrpcClient(f"127.0.0.1:{monitored_server.grpc_port}") as client:
        for _ in range(3):
            client.predict(["a dull film"])
    wait_for(lambda: scraped(prometheus, "OK") == 7, 60, "the first round scraped")
    for _ in range(2):
        assert requests.post(rest, json={"instances": ["fine"]}, timeout=30).ok
    assert requests.post(rest, json={"instances": [3]}, timeout=30).status_code == 400
    wait_for(lambda: scraped(prometheus, "OK") == 9, 60, "the second round scraped")
    assert scraped(prometheus, "INVALID_ARGUMENT") == 2

    def every_dashboard_series() -> bool:
        return all(query(prometheus, expr) for expr in expected_queries())

    wait_for(every_dashboard_series, timeout=60, what="the dashboard's series")

    def error_ratio() -> float:
        ratios = query(prometheus, "imdb:error_ratio:rate5m")
        return float(ratios[0]["value"][1]) if ratios else float("nan")

    wait_for(lambda: 0 < error_ratio() < 1, timeout=30, what="an error ratio between 0 and 1")
    statuses = {r["metric"]["status"] for r in query(prometheus, "imdb:request_rate:rate5m")}
    assert statuses == {"OK", "INVALID_ARGUMENT"}
    transports = {
        r["metric"]["entrypoint"] for r in query(prometheus, "imdb:request_latency_p99_ms:rate5m")
    }
    assert transports == {"REST", "GRPC"}
    # Nothing failed to load or warm up: those alerts' series are empty, and no alert fires.
    assert query(prometheus, "imdb:load_failures:increase15m") == []
    firing = requests.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    assert [a for a in firing if a["labels"]["alertname"].startswith("ModelVersion")] == []


def raw_metrics(expr: str, recorded: dict[str, str]) -> set[str]:
    """The scraped series an expression reads, through the recording rules it uses."""
    names = set()
    for name in tf_serving_metrics.metric_names(expr):
        names |= raw_metrics(recorded[name], recorded) if name in recorded else {name}
    return names


def expected_queries() -> list[str]:
    """The dashboard's queries that this traffic must fill: not the failure counts (nothing
    fails here), nor the panels on TF Serving metrics the local server does not emit."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    recorded = {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    queries = [target["expr"] for panel in panels for target in panel["targets"]]
    local = {
        series
        for metric in tf_serving_metrics.METRICS.values()
        if metric.local_server
        for series in metric.series
    }
    expected = [
        expr for expr in queries if "failures" not in expr and raw_metrics(expr, recorded) <= local
    ]
    # The panels this test covers: all but the TF-Serving-only batching ones.
    assert len(expected) == len(queries) - 3, expected
    return expected
