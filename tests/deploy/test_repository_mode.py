"""Model repository mode offline: the two overlays (rendered, beside the schema/checkov/hardening
checks that test_manifests.py runs on every overlay), the sync sidecar's image, and the names
that the rollout (serving/rollout/) shares with the manifests."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import contract
from serving.rollout.cli import main as rollout_main
from serving.rollout.fleet import KUSTOMIZE_LABELS, POD_SELECTOR
from tests.deploy.manifests import container_of, dockerfile_cmd, find, run_deploy
from tests.helpers import K8S_NAMESPACE, PROJECT_ROOT

CONFIG_MOUNT = "/etc/tfserving/repository"
# The flags model repository mode adds to the image's CMD, and the one it changes.
REPOSITORY_FLAGS = {
    f"--model_config_file={CONFIG_MOUNT}/models.config",
    "--model_config_file_poll_wait_seconds=30",
    "--allow_version_labels_for_unavailable_models=true",
    "--file_system_poll_wait_seconds=10",
}


def overlay_config(overlay: str) -> model_server_config_pb2.ModelConfig:
    text = (PROJECT_ROOT / "k8s" / overlay / "models.config").read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    return model


def flags_of(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


@pytest.mark.parametrize("overlay", ["overlays/gke-repository", "overlays/eks-repository"])
def test_servers_follow_the_mounted_models_config(rendered, overlay):
    docs = rendered[overlay][1]
    container = container_of(docs)
    image_args = set(dockerfile_cmd())
    changed = {arg for arg in image_args if arg.startswith(("--model_config_file=", "--file_sys"))}
    assert set(container["args"]) == (image_args - changed) | REPOSITORY_FLAGS
    # The ConfigMap: a fixed name (edits reach running pods), the overlay's file, mounted as a
    # directory (a subPath mount would never see an update).
    config_map = find(docs, "ConfigMap", contract.MODELS_CONFIGMAP)
    assert config_map["metadata"]["labels"] == KUSTOMIZE_LABELS
    assert config_map["metadata"]["namespace"] == K8S_NAMESPACE
    text = (PROJECT_ROOT / "k8s" / overlay / "models.config").read_text()
    assert config_map["data"] == {"models.config": text}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == CONFIG_MOUNT)
    assert "subPath" not in mount and mount["readOnly"] is True
    volume = next(
        v for v in find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == mount["name"]
    )  # fmt: skip
    assert volume["configMap"]["name"] == contract.MODELS_CONFIGMAP
    # The rollout's starting point: one version, labelled stable, under a specific policy.
    model = overlay_config(overlay)
    assert model.name == contract.MODEL_NAME and model.model_platform == "tensorflow"
    versions = list(model.model_version_policy.specific.versions)
    assert dict(model.version_labels) == {"stable": versions[0]} and len(versions) == 1
    # The rollout finds the pods with its selector.
    labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for pair in POD_SELECTOR.split(","):
        key, value = pair.split("=")
        assert labels[key] == value
    egress_ports = {
        port["port"] for rule in find(docs, "NetworkPolicy")["spec"]["egress"]
        for port in rule["ports"]
    }  # fmt: skip
    assert {53, 443} <= egress_ports


def test_gke_reads_the_bucket_itself(rendered):
    docs = rendered["overlays/gke-repository"][1]
    assert overlay_config("overlays/gke-repository").base_path.startswith("gs://")
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    # Workload Identity's metadata server is reachable; no key is mounted anywhere.
    cidrs = {
        peer["ipBlock"]["cidr"]
        for rule in find(docs, "NetworkPolicy")["spec"]["egress"]
        for peer in rule.get("to", [])
        if "ipBlock" in peer
    }
    assert "169.254.169.254/32" in cidrs
    assert not [v for v in pod["volumes"] if "secret" in v]


def test_eks_sync_sidecar_fills_the_model_folder_before_the_server_starts(rendered):
    docs = rendered["overlays/eks-repository"][1]
    model = overlay_config("overlays/eks-repository")
    assert model.base_path == contract.CONTAINER_MODEL_BASE_PATH
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"  # a native sidecar: starts first, keeps running
    flags = flags_of(sidecar["args"])
    assert flags["repository"].startswith("s3://")
    assert flags["target"] == model.base_path
    server_flags = flags_of(container_of(docs)["args"])
    assert flags["model-config"] == server_flags["model_config_file"]
    assert sidecar["startupProbe"]["exec"]["command"] == ["test", "-e", flags["ready-file"]]
    assert sidecar["image"].startswith("ACCOUNT_ID.dkr.ecr.")
    # Both containers share the emptyDir; the server only reads it.
    models = {v["name"]: v for v in pod["volumes"]}
    shared = [m for m in sidecar["volumeMounts"] if model.base_path.startswith(m["mountPath"])]
    (mount,) = shared
    assert models[mount["name"]]["emptyDir"]["sizeLimit"]
    server_mount = next(m for m in container_of(docs)["volumeMounts"] if m["name"] == mount["name"])
    assert server_mount["readOnly"] is True
    # Hardened like the server; bounded memory and disk; credentials from IRSA, not keys.
    security = sidecar["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]} and security["runAsNonRoot"]
    assert sidecar["resources"]["limits"]["memory"]
    limit = sidecar["resources"]["limits"]["ephemeral-storage"]
    assert limit == models[mount["name"]]["emptyDir"]["sizeLimit"]
    account = find(docs, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    assert not [e for e in sidecar.get("env", []) if "SECRET" in e["name"] or "KEY" in e["name"]]


def test_sync_image_carries_exactly_what_the_sidecar_imports():
    """Imports serving.s3_sync and builds an S3 client in a fresh interpreter; every project
    module it loaded is COPYed by docker/sync.Dockerfile, and nothing needs TensorFlow."""
    probe = (
        "import sys, json, serving.s3_sync as s\n"
        "s.S3Repository('s3://bucket/imdb', endpoint_url='http://127.0.0.1:9')\n"
        "names = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "ours = sorted(m for m in sys.modules if m.split('.')[0] == 'serving')\n"
        "print(json.dumps([sorted(names), ours]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": "us-east-1"},
    )
    top_levels, ours = json.loads(result.stdout.strip().splitlines()[-1])
    allowed = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3"}
    allowed |= {"google", "tensorflow_serving", "serving", "_distutils_hack", "_cffi_backend"}
    # certifi is used when installed (here, through requests); botocore bundles its own CAs.
    allowed |= {"certifi", "__main__", "__mp_main__"}
    assert set(top_levels) <= allowed, set(top_levels) - allowed
    dockerfile = (PROJECT_ROOT / "docker" / "sync.Dockerfile").read_text().replace("\\\n", "")
    copied = set(re.search(r"^COPY (serving/.*) /app/serving/$", dockerfile, re.M).group(1).split())
    assert {f"{name.replace('.', '/')}.py" for name in ours if name != "serving"} | {
        "serving/__init__.py"
    } == copied
    assert "--constraint /app/requirements.lock" in dockerfile


def test_rollout_dry_run_on_a_cluster_changes_nothing(tmp_path, capsys):
    repository = tmp_path / "repository"
    for number in (1, 2):  # published by hand: the dry run only reads manifests
        (repository / str(number)).mkdir(parents=True)
        (repository / str(number) / "PUBLISHED.json").write_text(
            json.dumps({"format": 1, "version": number, "files": []})
        )
    config = tmp_path / "models.config"
    config.write_text((PROJECT_ROOT / "k8s/overlays/eks-repository/models.config").read_text())
    before = config.read_text()
    argv = ["--config", str(config), "--namespace", K8S_NAMESPACE, "--dry-run"]
    assert rollout_main(["canary", *argv, "--repository", str(repository)]) == 0
    output = capsys.readouterr().out
    assert "Loading version 2 beside stable version 1" in output
    assert f"kubectl -n {K8S_NAMESPACE} apply -f -" in output
    assert 'key: "canary"' in output
    assert config.read_text() == before


def test_deploy_dry_run_pins_the_sync_image_too(tools_bin, tmp_path):
    registry = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    result = run_deploy(
        tools_bin, tmp_path, "deploy", "--cloud", "eks-repository",
        "--image", f"{registry}/imdb-sentiment-serving", "--model-version", "3", "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"+ docker build -f docker/sync.Dockerfile -t {registry}/imdb-model-sync:v3-" in (
        result.stdout
    )
    assert "models.config names" in result.stdout
    (manifest,) = tmp_path.glob("*/rendered.yaml")
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    (sidecar,) = find(docs, "Deployment")["spec"]["template"]["spec"]["initContainers"]
    assert sidecar["image"] == f"{registry}/imdb-model-sync@sha256:DIGEST-OF-THE-PUSHED-IMAGE"
