"""The serving contract module and the files outside Python that must agree with it."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from serving import contract, tf_serving_metrics
from tests.helpers import PROJECT_ROOT

GOOD_INPUTS = {"review": ("DT_STRING", (-1,))}
GOOD_OUTPUTS = {"probability": ("DT_FLOAT", (-1,)), "label": ("DT_STRING", (-1,))}


def test_the_contracts_names_agree_with_each_other():
    # An edit to one name must carry through the others that are built from it or list it.
    assert set(contract.EXPECTED_INPUTS) == {contract.INPUT_KEY}
    assert set(contract.EXPECTED_OUTPUTS) == set(contract.OUTPUT_KEYS)
    assert contract.LABELS == (contract.NEGATIVE_LABEL, contract.POSITIVE_LABEL)
    assert contract.NEGATIVE_LABEL != contract.POSITIVE_LABEL
    assert 0 < contract.DECISION_THRESHOLD < 1
    assert contract.GRPC_PORT != contract.REST_PORT
    assert all(1024 <= port < 65536 for port in (contract.GRPC_PORT, contract.REST_PORT))
    assert contract.MODEL_BASE_DIR.split("/")[-1] == contract.MODEL_NAME
    assert contract.CONTAINER_MODEL_BASE_PATH.split("/")[-1] == contract.MODEL_NAME
    # A model name is a path segment and a URL segment (/v1/models/<name>).
    assert re.fullmatch(r"[a-z0-9][a-z0-9_-]*", contract.MODEL_NAME)


def test_contract_module_has_no_imports():
    tree = ast.parse((PROJECT_ROOT / "serving" / "contract.py").read_text())
    assert not [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]


def test_the_signature_name_is_spelled_only_in_the_contract():
    spelled = [
        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}"
        for folder in ("serving", "training", "scripts")
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py"))
        if path != PROJECT_ROOT / "serving" / "contract.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and node.value == contract.SIGNATURE_NAME
    ]
    assert spelled == [], "use serving.contract.SIGNATURE_NAME"


def test_matching_signature_has_no_problems():
    assert contract.signature_problems(GOOD_INPUTS, GOOD_OUTPUTS) == []


@pytest.mark.parametrize(
    ("inputs", "outputs", "expected"),
    [
        ({"review": ("DT_FLOAT", (-1,))}, GOOD_OUTPUTS, "input 'review' has dtype DT_FLOAT"),
        ({"review": ("DT_STRING", (-1, 1))}, GOOD_OUTPUTS, "has shape (-1, 1)"),
        ({"text": ("DT_STRING", (-1,))}, GOOD_OUTPUTS, "input keys are ['text']"),
        (GOOD_INPUTS, {"output_0": ("DT_FLOAT", (-1, 1))}, "output keys are ['output_0']"),
        (GOOD_INPUTS, {**GOOD_OUTPUTS, "label": ("DT_STRING", None)}, "has shape None"),
    ],
)
def test_problems_are_named(inputs, outputs, expected):
    problems = contract.signature_problems(inputs, outputs)
    assert any(expected in problem for problem in problems), problems


def test_dockerfile_agrees_with_contract():
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    assert f"ENV MODEL_NAME={contract.MODEL_NAME}" in dockerfile
    assert f'"--port={contract.GRPC_PORT}"' in dockerfile
    assert f'"--rest_api_port={contract.REST_PORT}"' in dockerfile
    assert f"EXPOSE {contract.GRPC_PORT} {contract.REST_PORT}" in dockerfile
    assert f"ARG MODEL_DIR={contract.MODEL_BASE_DIR}\n" in dockerfile
    assert f"${{MODEL_DIR}}/${{MODEL_VERSION}} {contract.CONTAINER_MODEL_BASE_PATH}/" in dockerfile
    assert f"/v1/models/{contract.MODEL_NAME} HTTP/1.0" in dockerfile  # HEALTHCHECK
    assert re.search(r"^FROM \$\{TF_SERVING_IMAGE\}$", dockerfile, re.MULTILINE)
    tag = re.search(r"^ARG TF_SERVING_IMAGE=tensorflow/serving:(\S+)$", dockerfile, re.MULTILINE)
    assert tag and re.fullmatch(r"\d+\.\d+\.\d+", tag.group(1))
    template = (PROJECT_ROOT / "docker" / "config" / "models.config.template").read_text()
    assert f'name: "{contract.MODEL_NAME}"' in template


def test_serving_image_is_not_older_than_the_exporting_tensorflow():
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    serving = re.search(r"tensorflow/serving:(\d+)\.(\d+)\.(\d+)", dockerfile).groups()
    lock = (PROJECT_ROOT / "requirements.lock").read_text()
    exporter = re.search(r"^tensorflow==(\d+)\.(\d+)\.(\d+)$", lock, re.MULTILINE).groups()
    assert tuple(map(int, serving[:2])) >= tuple(map(int, exporter[:2]))


def test_compose_agrees_with_contract():
    compose = (PROJECT_ROOT / "docker" / "docker-compose.yml").read_text()
    assert f'"127.0.0.1:${{GRPC_PORT:-{contract.GRPC_PORT}}}:{contract.GRPC_PORT}"' in compose
    assert f'"127.0.0.1:${{REST_PORT:-{contract.REST_PORT}}}:{contract.REST_PORT}"' in compose
    assert f"--model-name={contract.MODEL_NAME}" in compose


def test_kubernetes_files_agree_with_contract():
    k8s = PROJECT_ROOT / "k8s"
    kustomizations = sorted(k8s.glob("**/kustomization.yaml"))
    namespaces = {
        path.relative_to(k8s).as_posix(): yaml.safe_load(path.read_text()).get("namespace")
        for path in kustomizations
    }
    # The base and every overlay put their objects in the namespace (a component has none).
    assert {name for path, name in namespaces.items() if "components/" not in path} == {
        contract.K8S_NAMESPACE
    }, namespaces
    for path in ("base/namespace.yaml", "overlays/eks/namespace-readiness-gate.yaml"):
        assert yaml.safe_load((k8s / path).read_text())["metadata"]["name"] == (
            contract.K8S_NAMESPACE
        )
    # Alert rules and their tests select the namespace and count the contract's metric.
    for path in k8s.glob("**/*.yaml"):
        for found in re.findall(r"namespace(?:=\"|: )([a-z0-9-]+)", path.read_text()):
            assert found == contract.K8S_NAMESPACE, path
    for path in (
        "monitoring/rules.yaml",
        "overlays/gke/rules.yaml",
        "overlays/eks/prometheusrule.yaml",
    ):
        assert f"rate({contract.REQUEST_COUNT_METRIC}[5m])" in (k8s / path).read_text(), path
    # The contract's metric is TF Serving's, as the one list of its metrics has it.
    request_count = tf_serving_metrics.METRICS[contract.REQUEST_COUNT_METRIC]
    assert request_count.name == tf_serving_metrics.REQUEST_COUNT
    assert (request_count.kind, request_count.labels) == ("counter", ("model_name", "status"))
    # Where Prometheus scrapes and where TF Serving serves the metrics.
    monitoring = (k8s / "base/config/monitoring.config").read_text()
    assert f'path: "{contract.METRICS_PATH}"' in monitoring
    gke = yaml.safe_load((k8s / "overlays/gke/podmonitoring.yaml").read_text())
    assert [e["path"] for e in gke["spec"]["endpoints"]] == [contract.METRICS_PATH]
    eks = yaml.safe_load((k8s / "overlays/eks/podmonitor.yaml").read_text())
    assert [e["path"] for e in eks["spec"]["podMetricsEndpoints"]] == [contract.METRICS_PATH]
    config_maps = [
        yaml.safe_load((k8s / f"overlays/{overlay}/kustomization.yaml").read_text())
        for overlay in ("gke-repository", "eks-repository")
    ]
    for kustomization in config_maps:
        (generated,) = kustomization["configMapGenerator"]
        assert generated["name"] == contract.MODELS_CONFIGMAP
    mounted = (k8s / "components/model-repository/deployment.yaml").read_text()
    assert f"name: {contract.MODELS_CONFIGMAP}\n" in mounted


def test_the_makefile_and_deploy_script_read_the_names_from_the_contract():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    deploy = (PROJECT_ROOT / "scripts" / "deploy.sh").read_text()
    assert "c.K8S_NAMESPACE" in makefile and "c.METRICS_PATH" in makefile
    assert "c.K8S_NAMESPACE" in deploy
    for text in (makefile, deploy):
        assert contract.K8S_NAMESPACE not in text
        assert contract.METRICS_PATH not in text


def test_the_local_server_uses_the_contracts_metric_names():
    from serving.model_server import metrics, server

    assert metrics.REQUEST_COUNT == contract.REQUEST_COUNT_METRIC
    assert server.DEFAULT_METRICS_PATH == contract.METRICS_PATH
