"""EKS model repository mode (docs/deploy.md §6, k8s/overlays/eks-repository) end to end in
containers: the sync sidecar image (docker/sync.Dockerfile) copies the versions that
models.config names from S3 (moto's server on the host's loopback) into a shared volume, and the
serving image, with the repository component's arguments, serves them from that volume, read-only.

What Kubernetes would do is done by hand, from the shipped manifests: the sidecar's arguments,
env, user and startupProbe come from the overlay's deployment-sync.yaml, the server's arguments
from k8s/components/model-repository/deployment.yaml; the emptyDir becomes a docker volume, the
ConfigMap a read-only bind-mounted folder, and the startupProbe a `docker exec` of its command
before the server starts. Only the bucket and the sync interval are replaced.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from serving.model_config import read_model_server_config
from serving.rollout.state import with_state, write_config
from tests.docker.dockerlib import (
    STATUS_PATH,
    Container,
    DockerObjects,
    build,
    docker,
    unique,
)
from tests.docker.test_image import HARDENED
from tests.helpers import PROJECT_ROOT

# moto's server and a bucket emptied and deleted after each test (fixtures, used by name).
from tests.integration.test_s3_repository import (  # noqa: F401
    REPOSITORY,
    bucket,
    s3_endpoint,
)

pytestmark = pytest.mark.docker

OVERLAY = PROJECT_ROOT / "k8s" / "overlays" / "eks-repository"
COMPONENT = PROJECT_ROOT / "k8s" / "components" / "model-repository" / "deployment.yaml"
# Seconds between the sidecar's passes (the overlay's 10 s, shortened; a config edit starts a
# pass within a second anyway).
SYNC_INTERVAL = 2
# The sidecar's securityContext: read-only root, no capabilities, no privilege escalation, and,
# as in the pod, no /tmp (it writes only into the model volume).
SIDECAR_HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
# The fake credentials that the s3_endpoint fixture puts in this process's environment.
FAKE_AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED")
REVIEW = "A wonderful film, with a moving story and fine acting."


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def sidecar_spec() -> dict:
    (sidecar,) = load(OVERLAY / "deployment-sync.yaml")["spec"]["template"]["spec"][
        "initContainers"
    ]
    return sidecar


def server_args() -> list[str]:
    (server,) = load(COMPONENT)["spec"]["template"]["spec"]["containers"]
    return server["args"]


def mount_path(container: dict, volume: str) -> str:
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return path


def sidecar_args(sidecar: dict) -> list[str]:
    """The overlay's arguments with the test's bucket and a shorter interval (both must be
    there: the test must notice if the overlay changes)."""
    replaced = {"--repository": f"--repository={REPOSITORY}", "--interval": None}
    args = []
    for argument in sidecar["args"]:
        flag = argument.split("=", 1)[0]
        if flag in replaced:
            argument = replaced.pop(flag) or f"--interval={SYNC_INTERVAL}"
        args.append(argument)
    assert not replaced, f"the overlay's sidecar has no {sorted(replaced)}: {sidecar['args']}"
    return args


def flag(args: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return value


@pytest.fixture(scope="module")
def sync_image(base_images) -> Iterator[str]:
    tag = build(
        "docker/sync.Dockerfile",
        PROJECT_ROOT,
        unique("imdb-model-sync"),
        {"PYTHON_IMAGE": base_images["PYTHON_IMAGE"]},
    )
    yield tag
    docker("rmi", "--force", tag)


@pytest.fixture
def config_dir(tmp_path) -> Path:
    """The ConfigMap's mount: a folder readable by the containers' user, holding models.config
    (a folder, not the file, so that an atomic replace reaches the containers)."""
    folder = tmp_path / "repository"
    folder.mkdir()
    folder.chmod(0o755)
    return folder


class Pod:
    """The eks-repository pod in two containers sharing a volume: the sidecar, then the server
    once the sidecar's startupProbe command succeeds."""

    def __init__(self, objects: DockerObjects, config_dir: Path, endpoint: str):
        self.objects = objects
        self.config_dir = config_dir
        self.s3_endpoint = endpoint
        self.spec = sidecar_spec()
        self.args = sidecar_args(self.spec)
        self.volume = objects.volume()
        self.models_mount = mount_path(self.spec, "models")
        self.config_mount = mount_path(self.spec, "models-config")
        self.target = flag(self.args, "target")
        self.sync: Container | None = None
        self.server: Container | None = None

    def config_options(self) -> tuple[str, ...]:
        return (
            "--mount",
            f"type=bind,source={self.config_dir},destination={self.config_mount},readonly",
        )

    def start_sync(self, image: str) -> Container:
        security = self.spec["securityContext"]
        user = f"{security['runAsUser']}:{security['runAsGroup']}"
        image_user = docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout
        assert image_user.strip() == user, "the image's USER is not the overlay's runAsUser"
        env = {item["name"]: item["value"] for item in self.spec.get("env", [])}
        env |= {key: os.environ[key] for key in FAKE_AWS}
        env["AWS_ENDPOINT_URL_S3"] = self.s3_endpoint  # what S3Repository and boto3 read
        options = [
            "--network", "host",  # 127.0.0.1 is the host's loopback, where moto listens
            "--user", user,
            *SIDECAR_HARDENED,
            "-v", f"{self.volume}:{self.models_mount}",
            *self.config_options(),
        ]  # fmt: skip
        for key, value in env.items():
            options += ["-e", f"{key}={value}"]
        self.sync = self.objects.run(image, *self.args, options=options, publish=False)
        return self.sync

    def wait_until_synced(self, timeout: float = 120) -> None:
        """Runs the startupProbe's command in the sidecar until it succeeds."""
        probe = self.spec["startupProbe"]["exec"]["command"]
        deadline = time.monotonic() + timeout
        while docker("exec", self.sync.id, *probe).returncode != 0:
            if not self.sync.state()["Running"]:
                raise AssertionError(f"the sidecar stopped; its log:\n{self.sync.logs()[-3000:]}")
            if time.monotonic() > deadline:
                log = self.sync.logs()[-3000:]
                raise AssertionError(f"no {probe[-1]} within {timeout:.0f} s; the log:\n{log}")
            time.sleep(0.5)

    def start_server(self, image: str) -> Container:
        options = (
            *HARDENED,
            "-v", f"{self.volume}:{self.models_mount}:ro",
            *self.config_options(),
        )  # fmt: skip
        self.server = self.objects.run(image, *server_args(), options=options)
        return self.server

    def on_disk(self) -> list[str]:
        """What the model folder holds, hidden entries included."""
        listing = docker("exec", self.sync.id, "ls", "-A", self.target, check=True).stdout
        return sorted(listing.split())

    def write_config(self, config) -> None:
        write_config(self.config_dir / "models.config", config)


def version_states(server: Container) -> dict[int, str]:
    try:
        response = requests.get(server.rest_url + STATUS_PATH, timeout=5)
    except requests.RequestException:
        return {}
    if not response.ok:
        return {}
    return {
        int(status["version"]): status["state"]
        for status in response.json().get("model_version_status", [])
    }


def wait_for_available(pod: Pod, versions: set[int], timeout: float) -> dict[int, str]:
    """Waits until exactly ``versions`` are AVAILABLE; fails with both logs otherwise."""
    deadline = time.monotonic() + timeout
    states: dict[int, str] = {}
    while time.monotonic() < deadline:
        states = version_states(pod.server)
        if {v for v, state in states.items() if state == "AVAILABLE"} == versions:
            return states
        if not pod.server.state()["Running"]:
            break
        time.sleep(0.5)
    raise AssertionError(
        f"wanted {sorted(versions)} AVAILABLE within {timeout:.0f} s, saw {states}\n"
        f"server log:\n{pod.server.logs()[-3000:]}\nsidecar log:\n{pod.sync.logs()[-2000:]}"
    )


def label_version(server: Container, label: str) -> int:
    url = f"{server.rest_url}{STATUS_PATH}/labels/{label}/metadata"
    response = requests.get(url, timeout=10)
    assert response.ok, f"{url}: {response.status_code} {response.text[:500]}"
    return int(response.json()["model_spec"]["version"])


def predict_by_label(server: Container, label: str) -> list:
    url = f"{server.rest_url}{STATUS_PATH}/labels/{label}:predict"
    response = requests.post(url, json={"instances": [REVIEW]}, timeout=30)
    assert response.ok, f"{url}: {response.status_code} {response.text[:500]}"
    predictions = response.json()["predictions"]
    assert len(predictions) == 1, predictions
    return predictions


def overlay_config():
    """The overlay's own models.config (the state `make publish` / `make canary` edit)."""
    return read_model_server_config(OVERLAY / "models.config")


@pytest.fixture
def pod(bucket, docker_objects, config_dir, s3_endpoint) -> Pod:  # noqa: F811
    return Pod(docker_objects, config_dir, s3_endpoint)


def test_sidecar_fills_the_volume_and_the_server_serves_what_models_config_names(
    bucket,  # noqa: F811
    mlp_version,
    pod,
    sync_image,
    serving_image,
):
    for version in (1, 2):
        bucket.publish(mlp_version, version)
    pod.write_config(with_state(overlay_config(), [1, 2], {"stable": 1, "canary": 2}))

    sync = pod.start_sync(sync_image)
    pod.wait_until_synced()
    assert pod.on_disk() == ["1", "2"]  # no staging folder left, nothing else
    log = sync.logs()
    assert "Fetched version 1" in log and "Fetched version 2" in log, log
    assert "First sync complete" in log, log
    uid = pod.spec["securityContext"]["runAsUser"]
    processes = docker("top", sync.id, "-o", "pid,uid,args", check=True).stdout.splitlines()[1:]
    assert processes and all(line.split()[1] == str(uid) for line in processes), processes

    server = pod.start_server(serving_image)
    states = wait_for_available(pod, {1, 2}, timeout=180)
    assert states == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert "unknown argument" not in server.logs()  # the component names only known flags
    assert label_version(server, "stable") == 1
    assert label_version(server, "canary") == 2
    assert predict_by_label(server, "stable") == predict_by_label(server, "canary")  # one export
    assert sync.state()["Running"] and server.state()["Running"]


def test_a_published_version_named_in_models_config_reaches_the_running_server(
    bucket,  # noqa: F811
    mlp_version,
    pod,
    sync_image,
    serving_image,
):
    """`make publish` then `make canary` on a running pod: the sidecar fetches the new version
    when models.config names it, and the server (polling the config every 30 s, as shipped)
    loads it and gives it the canary label, with no restart."""
    bucket.publish(mlp_version, 1)
    shutil.copy(OVERLAY / "models.config", pod.config_dir / "models.config")
    (pod.config_dir / "models.config").chmod(0o644)
    pod.start_sync(sync_image)
    pod.wait_until_synced()
    assert pod.on_disk() == ["1"]
    server = pod.start_server(serving_image)
    wait_for_available(pod, {1}, timeout=180)
    predict_by_label(server, "stable")

    bucket.publish(mlp_version, 2)
    pod.write_config(with_state(overlay_config(), [1, 2], {"stable": 1, "canary": 2}))
    poll = int(flag(server_args(), "model_config_file_poll_wait_seconds"))
    scan = int(flag(server_args(), "file_system_poll_wait_seconds"))
    wait_for_available(pod, {1, 2}, timeout=poll + scan + 60)
    assert pod.on_disk() == ["1", "2"]
    assert "Fetched version 2" in pod.sync.logs()
    assert label_version(server, "stable") == 1
    assert label_version(server, "canary") == 2
    predict_by_label(server, "canary")
