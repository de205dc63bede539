"""Offline validation of the deployment: Dockerfiles, compose, and every Kubernetes overlay.

No cluster and no Docker engine: manifests are rendered with `kubectl kustomize`, validated
against the Kubernetes JSON schemas of two minor versions that GKE and EKS support (strict:
unknown fields fail), checked by checkov, hadolint and yamllint, and checked against the serving
contract. The tools come from the pinned .tools environment (`make tools`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from serving import contract
from serving.model_server import tf_serving_flags
from tests.deploy.manifests import (
    IMAGE_OVERLAYS,
    OVERLAYS,
    container_of,
    dockerfile_cmd,
    dockerfile_env,
    find,
    run_deploy,
)
from tests.helpers import (
    K8S_NAMESPACE,
    PROJECT_ROOT,
    loopback_server,
    run_tool,
    skip_or_fail,
)

# Kubernetes minors validated against: supported by both GKE and EKS at the time of writing.
KUBERNETES_VERSIONS = ("1.33.0", "1.35.0")
# Custom resources: no bundled schema, so their fields are checked by the semantic tests below.
CUSTOM_KINDS = {"BackendConfig", "PodMonitoring", "PodMonitor", "PrometheusRule", "Rules"}
STATUS_PATH = f"/v1/models/{contract.MODEL_NAME}"
DOCKERFILES = ("docker/Dockerfile", "docker/smoke.Dockerfile", "docker/sync.Dockerfile")


# ---------------------------------------------------------------------------------------------
# Tools


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_schema_validation_is_strict_and_clean(tools_bin, rendered, overlay, version):
    path, docs = rendered[overlay]
    result = run_tool(tools_bin, "kubernetes-validate", "--strict", "-k", version, str(path))
    problems = [line for line in result.stdout.splitlines() if not line.startswith("INFO")]
    errors = [line for line in problems if not line.startswith("WARN")]
    assert result.returncode == 0 and not errors, "\n".join(problems)
    unvalidated = {re.search(r"kind (\w+)", line).group(1) for line in problems}
    assert unvalidated <= CUSTOM_KINDS, f"kinds without a schema: {unvalidated}"
    assert sum("passed for resource" in line for line in result.stdout.splitlines()) == len(
        [d for d in docs if d["kind"] not in CUSTOM_KINDS]
    )


def test_strict_validation_catches_an_unknown_field(tools_bin, rendered, tmp_path):
    path, _ = rendered["base"]
    broken = tmp_path / "broken.yaml"
    broken.write_text(path.read_text().replace("minReadySeconds:", "minReadySecs:"))
    result = run_tool(
        tools_bin, "kubernetes-validate", "--strict", "-k", KUBERNETES_VERSIONS[0], str(broken)
    )
    assert result.returncode != 0 and "ERROR" in result.stdout


def test_checkov_passes_with_only_justified_skips(tools_bin, rendered):
    folder = next(iter(rendered.values()))[0].parent
    manifests = run_tool(
        tools_bin,
        "checkov",
        "-d",
        str(folder),
        "--framework",
        "kubernetes",
        "--skip-download",
        "--config-file",
        ".checkov.yaml",
        "--output",
        "json",
        "--quiet",
    )
    dockerfiles = run_tool(
        tools_bin,
        "checkov",
        *[arg for f in DOCKERFILES for arg in ("-f", f)],
        "--framework",
        "dockerfile",
        "--skip-download",
        "--config-file",
        ".checkov.yaml",
        "--output",
        "json",
    )
    for result in (manifests, dockerfiles):
        reports = json.loads(result.stdout)
        reports = reports if isinstance(reports, list) else [reports]
        failed = [
            f"{check['check_id']} {check['resource']}"
            for report in reports
            for check in report["results"]["failed_checks"]
        ]
        assert not failed, failed
        assert sum(report["summary"]["passed"] for report in reports) > 50
    config = (PROJECT_ROOT / ".checkov.yaml").read_text()
    skips = re.findall(r"^  - (CKV\w+)$", config, re.MULTILINE)
    assert sorted(skips) == ["CKV_DOCKER_7", "CKV_K8S_15", "CKV_K8S_43"]
    for skip in skips:  # every skip is explained by the comment right above it
        assert re.search(rf"  # .+\n  - {skip}$", config, re.MULTILINE), skip


def test_hadolint_finds_nothing(tools_bin):
    result = run_tool(tools_bin, "hadolint", *DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_finds_nothing(tools_bin):
    result = run_tool(tools_bin, "yamllint", "--strict", "k8s", "docker/docker-compose.yml")
    assert result.returncode == 0, result.stdout


def test_compose_config_when_the_cli_has_compose():
    if (
        shutil.which("docker") is None
        or subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        skip_or_fail("the docker CLI has no compose plugin (`docker compose version` failed)")
    result = subprocess.run(
        [
            "docker",
            "compose",
            "-f",
            "docker/docker-compose.yml",
            "--profile",
            "smoke",
            "config",
            "-q",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=os.environ | {"MODEL_VERSION": "1"},
    )
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# The contract across Dockerfile, compose and Kubernetes


def test_image_cmd_and_kubernetes_args_are_the_same_flags(rendered):
    cmd = dockerfile_cmd()
    for overlay in IMAGE_OVERLAYS:
        assert container_of(rendered[overlay][1])["args"] == cmd, overlay
    assert f"--port={contract.GRPC_PORT}" in cmd and f"--rest_api_port={contract.REST_PORT}" in cmd


def test_config_files_named_by_the_flags_exist_where_they_are_mounted(rendered):
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in dockerfile_cmd())
    docs = rendered["base"][1]
    (config_map,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("tfserving-ops")
    ]
    mount = next(m for m in container_of(docs)["volumeMounts"] if m["name"] == "ops-config")
    for flag in ("monitoring_config_file", "batching_parameters_file"):
        folder, name = flags[flag].rsplit("/", 1)
        assert folder == mount["mountPath"] and name in config_map["data"], flag
        assert (PROJECT_ROOT / "k8s" / "base" / "config" / name).read_text() == config_map["data"][
            name
        ]
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    assert f"COPY k8s/base/config/ {mount['mountPath']}/" in dockerfile
    assert f"> {flags['model_config_file']}" in dockerfile
    assert "/prometheus/metrics" in config_map["data"]["monitoring.config"]


def test_models_config_names_the_model_and_its_base_path():
    template = (PROJECT_ROOT / "docker" / "config" / "models.config.template").read_text()
    assert f'name: "{contract.MODEL_NAME}"' in template
    assert f'base_path: "{contract.CONTAINER_MODEL_BASE_PATH}"' in template
    assert 'version_labels { key: "stable" value: @MODEL_VERSION@ }' in template


def test_ports_and_probes_follow_the_contract(rendered):
    for overlay in OVERLAYS:
        docs = rendered[overlay][1]
        container = container_of(docs)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"grpc": contract.GRPC_PORT, "http": contract.REST_PORT}
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["httpGet"] == {"path": STATUS_PATH, "port": "http"}
        assert container["livenessProbe"]["grpc"]["port"] == contract.GRPC_PORT
        service = find(docs, "Service", "imdb-sentiment")
        assert {p["name"]: (p["port"], p["appProtocol"]) for p in service["spec"]["ports"]} == {
            "grpc": (contract.GRPC_PORT, "kubernetes.io/h2c"),
            "http": (contract.REST_PORT, "http"),
        }
        headless = find(docs, "Service", "imdb-sentiment-grpc")
        assert headless["spec"]["clusterIP"] == "None"


def test_compose_runs_the_image_as_kubernetes_does():
    compose = yaml.safe_load((PROJECT_ROOT / "docker" / "docker-compose.yml").read_text())
    server, smoke = compose["services"]["tfserving"], compose["services"]["smoke"]
    assert "command" not in server  # the image's CMD: the same flags as Kubernetes
    # No second init: the image's tini is PID 1 and its entrypoint drains on SIGTERM.
    assert "init" not in server and server["read_only"] is True and server["tmpfs"]
    assert server["mem_limit"] and server["cap_drop"] == ["ALL"]
    assert server["ports"] == [
        f"127.0.0.1:${{GRPC_PORT:-{contract.GRPC_PORT}}}:{contract.GRPC_PORT}",
        f"127.0.0.1:${{REST_PORT:-{contract.REST_PORT}}}:{contract.REST_PORT}",
    ]
    assert smoke["depends_on"] == {"tfserving": {"condition": "service_healthy"}}
    assert f"--rest-url=http://tfserving:{contract.REST_PORT}" in smoke["command"]
    assert f"--grpc-target=tfserving:{contract.GRPC_PORT}" in smoke["command"]
    assert f"--model-name={contract.MODEL_NAME}" in smoke["command"]
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    assert f"/dev/tcp/127.0.0.1/{contract.REST_PORT}" in dockerfile
    assert f"GET {STATUS_PATH} HTTP/1.0" in dockerfile and "grep -q AVAILABLE" in dockerfile


# ---------------------------------------------------------------------------------------------
# Production practices


def test_pods_are_hardened_and_highly_available(rendered):
    for overlay in OVERLAYS:
        docs = rendered[overlay][1]
        deployment = find(docs, "Deployment")
        spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
        container = container_of(docs)
        assert spec["replicas"] >= 2
        assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["requests"] == container["resources"]["limits"]
        probes = [
            json.dumps(container[p], sort_keys=True) for p in ("readinessProbe", "livenessProbe")
        ]
        assert probes[0] != probes[1]
        assert (
            container["startupProbe"]["failureThreshold"]
            * container["startupProbe"]["periodSeconds"]
            >= 120
        )
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop + 10 <= pod["terminationGracePeriodSeconds"]
        zones = [c["topologyKey"] for c in pod["topologySpreadConstraints"]]
        assert "topology.kubernetes.io/zone" in zones
        hpa = find(docs, "HorizontalPodAutoscaler")
        assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["minReplicas"] >= 2
        assert find(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
        assert find(docs, "ServiceAccount")["automountServiceAccountToken"] is False
        policy = find(docs, "NetworkPolicy")["spec"]
        assert policy["policyTypes"] == ["Ingress", "Egress"]
        namespace = find(docs, "Namespace")
        assert namespace["metadata"]["name"] == K8S_NAMESPACE
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        for doc in docs:  # nothing lands in the default namespace
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == K8S_NAMESPACE, doc["kind"]


def pod_labels(docs: list[dict]) -> dict:
    return find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]


def test_gke_load_balancer_checks_the_model_and_metrics_are_scraped(rendered):
    docs = rendered["overlays/gke"][1]
    service = find(docs, "Service", "imdb-sentiment")
    backend = json.loads(service["metadata"]["annotations"]["cloud.google.com/backend-config"])
    ((port_name, config_name),) = backend["ports"].items()
    assert port_name in {p["name"] for p in service["spec"]["ports"]}
    health = find(docs, "BackendConfig", config_name)["spec"]["healthCheck"]
    assert (health["port"], health["requestPath"], health["type"]) == (
        contract.REST_PORT,
        STATUS_PATH,
        "HTTP",
    )
    assert json.loads(service["metadata"]["annotations"]["cloud.google.com/neg"]) == {
        "ingress": True
    }
    ingress = find(docs, "Ingress")["spec"]["defaultBackend"]["service"]
    assert (ingress["name"], ingress["port"]["name"]) == ("imdb-sentiment", "http")
    monitoring = find(docs, "PodMonitoring")["spec"]
    assert monitoring["selector"]["matchLabels"].items() <= pod_labels(docs).items()
    assert monitoring["endpoints"][0]["port"] == "http"
    assert monitoring["endpoints"][0]["path"] == contract.METRICS_PATH
    assert container_of(docs)["image"].startswith("europe-west1-docker.pkg.dev/")


def test_eks_nlb_checks_the_model_and_drains_before_stopping(rendered):
    docs = rendered["overlays/eks"][1]
    nlb = find(docs, "Service", "imdb-sentiment-nlb")
    annotations = {
        key.removeprefix("service.beta.kubernetes.io/aws-load-balancer-"): value
        for key, value in nlb["metadata"]["annotations"].items()
    }
    assert annotations["type"] == "external" and annotations["nlb-target-type"] == "ip"
    assert annotations["healthcheck-protocol"] == "HTTP"
    assert annotations["healthcheck-port"] == str(contract.REST_PORT)
    assert annotations["healthcheck-path"] == STATUS_PATH
    delay = int(
        re.search(
            r"deregistration_delay.timeout_seconds=(\d+)", annotations["target-group-attributes"]
        ).group(1)
    )
    container = container_of(docs)
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] >= delay
    assert nlb["spec"]["selector"].items() <= pod_labels(docs).items()
    namespace = find(docs, "Namespace")
    assert namespace["metadata"]["labels"]["elbv2.k8s.aws/pod-readiness-gate-inject"] == "enabled"
    monitor = find(docs, "PodMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= pod_labels(docs).items()
    assert monitor["podMetricsEndpoints"][0]["port"] == "http"
    assert monitor["podMetricsEndpoints"][0]["path"] == contract.METRICS_PATH
    assert ".dkr.ecr." in container["image"]


# ---------------------------------------------------------------------------------------------
# The image's config files actually work, and the deploy helper does what it says


def test_the_images_models_config_is_served_by_the_local_server(tmp_path, exported_version):
    from serving.client import RestClient

    base = tmp_path / "imdb"
    shutil.copytree(exported_version, base / "7")
    template = (PROJECT_ROOT / "docker" / "config" / "models.config.template").read_text()
    config = tmp_path / "models.config"
    config.write_text(
        template.replace("@MODEL_VERSION@", "7").replace(
            contract.CONTAINER_MODEL_BASE_PATH, str(base)
        )
    )
    server = loopback_server(
        model_config_file=str(config),
        grpc_channel_arguments=next(
            a.split("=", 1)[1] for a in dockerfile_cmd() if a.startswith("--grpc_channel_arguments")
        ),
    )
    server.start(load_timeout=60)
    try:
        with RestClient(f"http://127.0.0.1:{server.rest_port}") as client:
            assert [(v.version, v.state) for v in client.status()] == [(7, "AVAILABLE")]
            assert (
                client.predict(["A wonderful, brilliant film."], label="stable")[0].label
                == "positive"
            )
    finally:
        server.stop(grace_seconds=1)


@pytest.mark.parametrize(
    ("cloud", "registry"),
    [
        ("gke", "europe-west1-docker.pkg.dev/my-project/imdb/imdb-sentiment-serving"),
        ("eks", "123456789012.dkr.ecr.eu-west-1.amazonaws.com/imdb-sentiment-serving"),
    ],
)
def test_deploy_dry_run_prints_the_steps_and_renders_pinned_manifests(
    tools_bin, tmp_path, cloud, registry
):
    result = run_deploy(
        tools_bin,
        tmp_path,
        "deploy",
        "--cloud",
        cloud,
        "--image",
        registry,
        "--model-version",
        "3",
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("+ ")]
    assert commands[0].startswith("+ docker build -f docker/Dockerfile --build-arg MODEL_VERSION=3")
    assert commands[1].startswith(f"+ docker push {registry}:v3-")
    assert "apply -f" in commands[2] and "rollout status deployment/imdb-sentiment" in commands[3]
    assert "port-forward service/imdb-sentiment" in commands[4]
    assert "scripts/smoke_test.py" in commands[5]
    (manifest,) = tmp_path.glob("*/rendered.yaml")
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    deployment = find(docs, "Deployment")
    assert container_of(docs)["image"] == f"{registry}@sha256:DIGEST-OF-THE-PUSHED-IMAGE"
    assert (
        deployment["spec"]["template"]["metadata"]["annotations"]["imdb-sentiment/model-version"]
        == "3"
    )
    # The script's Kubernetes names are the manifests' names.
    namespace, name = deployment["metadata"]["namespace"], deployment["metadata"]["name"]
    assert f"-n {namespace} rollout status deployment/{name}" in commands[3]
    service_names = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert commands[4].split("port-forward service/")[1].split()[0] in service_names
    validation = run_tool(
        tools_bin, "kubernetes-validate", "--strict", "-k", KUBERNETES_VERSIONS[-1], str(manifest)
    )
    assert validation.returncode == 0, validation.stdout


def test_rollback_dry_run_and_argument_errors(tools_bin, tmp_path):
    rollback = run_deploy(
        tools_bin, tmp_path, "rollback", "--cloud", "gke", "--to-revision", "4", "--dry-run"
    )
    assert rollback.returncode == 0
    assert "rollout undo deployment/imdb-sentiment --to-revision=4" in rollback.stdout
    for args, message in [
        (
            ("deploy", "--cloud", "aws", "--image", "r/i"),
            "--cloud must be gke, eks, gke-repository or eks-repository",
        ),
        (("deploy", "--cloud", "gke"), "--image"),
        (("deploy", "--cloud", "gke", "--image", "imdb"), "registry"),
        (("deploy", "--cloud", "gke", "--image", "r.example:5000/imdb:v1"), "without a tag"),
        (("launch",), "unknown command"),
    ]:
        result = run_deploy(tools_bin, tmp_path, *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


def test_deploy_guide_uses_only_verbs_and_flags_that_exist():
    guide = (PROJECT_ROOT / "docs" / "deploy.md").read_text()
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    script = (PROJECT_ROOT / "scripts" / "deploy.sh").read_text()
    verbs = set(re.findall(r"\bmake ([a-z][a-z-]*)", guide))
    assert {"deploy", "rollback", "deploy-smoke", "train", "test"} <= verbs
    for verb in verbs:
        assert re.search(rf"^{verb}:", makefile, re.MULTILINE), f"make {verb} is not a target"
    calls = re.findall(r"scripts/deploy\.sh (\w+)((?: --[a-z-]+(?: [^\s`-][^\s`]*)?)*)", guide)
    assert {command for command, _ in calls} >= {"deploy", "rollback"}
    for command, flags in calls:
        assert re.search(rf"^  {command}\) {command} ;;$", script, re.MULTILINE), command
        for flag in re.findall(r"--[a-z-]+", flags):
            assert f"    {flag})" in script, f"scripts/deploy.sh has no {flag}"
    for path in re.findall(r"`(k8s/[\w/.-]+|docker/[\w/.-]+|scripts/[\w/.-]+)`", guide):
        assert (PROJECT_ROOT / path).exists(), path


# ---------------------------------------------------------------------------------------------
# Command lines the binary would misread, and the stop's time budget


def test_every_server_command_line_names_only_flags_the_binary_knows(rendered):
    """tensorflow_model_server starts with the default when a flag is misspelled (it says only
    `unknown argument`), so every command line we ship is checked against its flag list."""
    command_lines = {"docker/Dockerfile CMD": dockerfile_cmd()}
    for overlay in OVERLAYS:
        command_lines[f"k8s/{overlay} args"] = container_of(rendered[overlay][1])["args"]
    compose = yaml.safe_load((PROJECT_ROOT / "docker" / "docker-compose.yml").read_text())
    command_lines["compose command"] = compose["services"]["tfserving"].get("command", [])
    # The flags the image's entrypoint adds (`add NAME VALUE` lines).
    entrypoint = (PROJECT_ROOT / "docker" / "serving-entrypoint.sh").read_text()
    added = re.findall(r"^\s*add ([a-z_]+) ", entrypoint, re.MULTILINE)
    assert len(added) == 4, added
    command_lines["docker/serving-entrypoint.sh"] = [f"--{name}=1" for name in added]
    for where, arguments in command_lines.items():
        assert tf_serving_flags.problems(arguments) == [], where


def test_the_check_catches_a_misspelled_flag():
    (problem,) = tf_serving_flags.problems([*dockerfile_cmd(), "--enable_batchng=true"])
    assert "--enable_batchng=true" in problem


def test_the_drain_fits_in_every_grace_period(rendered):
    """After SIGTERM the entrypoint serves TF_SERVING_DRAIN_SECONDS more, then stops the server:
    compose's stop_grace_period and Kubernetes' terminationGracePeriodSeconds (which also covers
    the preStop sleep before SIGTERM) must leave a margin on top, or the stop ends in SIGKILL."""
    margin = 5
    drain = float(dockerfile_env("TF_SERVING_DRAIN_SECONDS"))
    compose = yaml.safe_load((PROJECT_ROOT / "docker" / "docker-compose.yml").read_text())
    grace = float(compose["services"]["tfserving"]["stop_grace_period"].removesuffix("s"))
    assert grace >= drain + margin
    assert drain + margin <= 10  # `docker stop` without -t waits 10 s
    for overlay in OVERLAYS:
        deployment = next(d for d in rendered[overlay][1] if d["kind"] == "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        pre_stop = container_of(rendered[overlay][1])["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] >= pre_stop + drain + margin, overlay
