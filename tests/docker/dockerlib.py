"""What the Docker tests share: the docker CLI, image builds, containers removed by id, waits.

The fixtures built on these are in conftest.py. Every container, network and volume a test
makes goes through ``DockerObjects``, which removes them by id when the test ends, pass or fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from serving import contract
from tests.helpers import PROJECT_ROOT, free_port

# Where the stand-in base images are built (tests/docker/standin/README.md).
STANDIN_BUILD = PROJECT_ROOT / "tests" / "docker" / "standin" / "build.sh"
# What the serving image's build context needs besides the model (docker/Dockerfile's COPYs).
SERVING_CONTEXT = ("docker", "k8s/base/config", ".dockerignore")
STATUS_PATH = f"/v1/models/{contract.MODEL_NAME}"


def run(argv: list[str], timeout: float, check: bool, env: dict[str, str] | None = None):
    """Runs a container CLI (docker, podman); with ``check``, a failure raises with the tool's
    own message."""
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv[:4])} ... failed:\n{result.stdout[-1500:]}{result.stderr[-3000:]}"
        )
    return result


def docker(*args: str, timeout: float = 600, check: bool = False, env: dict | None = None):
    """Runs ``docker ARGS``, building with BuildKit (the Dockerfiles need it; Docker 20.10's CLI
    uses it only when asked)."""
    return run(["docker", *args], timeout, check, env or os.environ | {"DOCKER_BUILDKIT": "1"})


def engine_problem() -> str | None:
    """Why the Docker tests cannot run here, or None when an engine answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (make docker-engine installs Debian's docker.io as root)"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out: no Docker engine answers"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (`docker info`: {last}); make docker-engine starts one"
    if docker("compose", "version", timeout=30).returncode != 0:
        return "the docker CLI has no compose v2 plugin; make docker-engine installs it"
    return None


def ca_bundle() -> str | None:
    """The CA bundle for pip inside builds, where TLS passes a proxy with its own CA:
    PIP_CA_BUNDLE, else the bundle this machine's own pip is told to trust (PIP_CERT)."""
    bundle = os.environ.get("PIP_CA_BUNDLE") or os.environ.get("PIP_CERT")
    return bundle if bundle and Path(bundle).is_file() else None


def ca_bundle_secret() -> list[str]:
    """``--secret`` arguments giving pip inside a build that bundle; none without one."""
    bundle = ca_bundle()
    return ["--secret", f"id=pip_ca,src={bundle}"] if bundle else []


def build(dockerfile: str, context: Path, tag: str, build_args: dict[str, str]) -> str:
    """Builds ``dockerfile`` (relative to ``context``) as ``tag``; returns the tag."""
    arguments = [f"--build-arg={key}={value}" for key, value in build_args.items()]
    docker(
        "build",
        "--quiet",
        "-f",
        str(context / dockerfile),
        *arguments,
        *ca_bundle_secret(),
        "-t",
        tag,
        str(context),
        timeout=1800,
        check=True,
    )
    return tag


def unique(name: str) -> str:
    return f"{name}-test-{uuid.uuid4().hex[:8]}"


def serving_context(folder: Path, version_dir: Path, version: int = 1) -> Path:
    """A build context for docker/Dockerfile with ``version_dir`` as models/imdb/<version>."""
    for item in SERVING_CONTEXT:
        source = PROJECT_ROOT / item
        target = folder / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    shutil.copytree(version_dir, folder / contract.MODEL_BASE_DIR / str(version))
    return folder


@dataclass
class Container:
    id: str
    rest_port: int | None = None
    grpc_port: int | None = None

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.id, check=True).stdout)[0]

    def state(self) -> dict:
        return self.inspect()["State"]

    def logs(self) -> str:
        result = docker("logs", self.id)
        return result.stdout + result.stderr

    def server_command_line(self) -> list[str]:
        """The arguments of tensorflow_model_server inside the container, read from the host's
        /proc (the image has no ps)."""
        top = docker("top", self.id, "-o", "pid,args", check=True).stdout.splitlines()[1:]
        for line in top:
            pid, _, args = line.strip().partition(" ")
            if "tensorflow_model_server" in args and "serving-entrypoint" not in args:
                return host_process(int(pid))[1]
        raise AssertionError(f"no tensorflow_model_server process in the container:\n{top}")


def host_process(pid: int) -> tuple[int, list[str]]:
    """(real uid, command line) of a container's process, by its PID on the host."""
    proc = Path("/proc") / str(pid)
    status = (proc / "status").read_text()
    uid = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:"))
    raw = (proc / "cmdline").read_bytes()
    return uid, [part.decode() for part in raw.split(b"\0") if part]


def wait_while_running(
    ready: Callable[[], bool],
    running: Callable[[], bool],
    logs: Callable[[], str],
    timeout: float,
    what: str,
) -> None:
    """Polls ``ready()`` until it is true; fails with the container's log when the container
    stops or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        if not running():
            raise AssertionError(f"the container stopped; its log:\n{logs()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s; the log:\n{logs()[-3000:]}")


@dataclass
class DockerObjects:
    """Containers, networks and volumes made by a test, removed by id at its end."""

    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)

    def run(self, image: str, *args: str, options: Iterable[str] = (), publish: bool = True):
        """``docker run --detach`` with the REST and gRPC ports published on free loopback
        ports (unless ``publish`` is false); returns the Container."""
        rest_port = grpc_port = None
        ports: list[str] = []
        if publish:
            rest_port, grpc_port = free_port(), free_port()
            ports = [
                "-p",
                f"127.0.0.1:{rest_port}:{contract.REST_PORT}",
                "-p",
                f"127.0.0.1:{grpc_port}:{contract.GRPC_PORT}",
            ]
        result = docker("run", "--detach", *ports, *options, image, *args, check=True)
        container = Container(result.stdout.strip(), rest_port, grpc_port)
        self.containers.append(container.id)
        return container

    def network(self) -> str:
        network = docker("network", "create", unique("imdb"), check=True).stdout.strip()
        self.networks.append(network)
        return network

    def volume(self) -> str:
        volume = docker("volume", "create", unique("imdb"), check=True).stdout.strip()
        self.volumes.append(volume)
        return volume

    def remove_all(self) -> None:
        if self.containers:
            docker("rm", "--force", "--volumes", *self.containers)
        for network in self.networks:
            docker("network", "rm", network)
        if self.volumes:
            docker("volume", "rm", "--force", *self.volumes)
        if self.images:
            docker("rmi", "--force", *self.images)


def wait_until_available(container: Container, timeout: float = 180) -> None:
    """Waits until the model's REST status says AVAILABLE."""

    def available() -> bool:
        try:
            response = requests.get(container.rest_url + STATUS_PATH, timeout=2)
        except requests.RequestException:
            return False
        return response.ok and "AVAILABLE" in response.text

    wait_while_running(
        available,
        lambda: container.state()["Running"],
        container.logs,
        timeout,
        "a version AVAILABLE",
    )


def wait_for_health(container: Container, wanted: str, timeout: float) -> list[str]:
    """Polls the HEALTHCHECK status until it is ``wanted``; returns every status seen, in order
    (repeats collapsed). Fails when the time runs out."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = container.state().get("Health", {}).get("Status", "none")
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == wanted:
            return seen
        time.sleep(0.5)
    raise AssertionError(f"health never became {wanted!r} within {timeout:.0f} s; saw {seen}")
