"""The real tensorflow/serving path: build the image, run it, smoke-test it; compose config.

These need a Docker engine (or the compose CLI plugin) and skip with the reason when there is
none, as on our development machines and CI, where `docker` is only a client.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from serving import contract
from tests.helpers import PROJECT_ROOT, free_port, run_python

pytestmark = pytest.mark.docker


def docker(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def engine_problem() -> str | None:
    """Why Docker tests cannot run here, or None when an engine answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out: no Docker engine answers"
    if info.returncode != 0:
        last = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine answers (`docker info`: {last})"
    return None


def compose_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker CLI on PATH"
    if docker("compose", "version", timeout=30).returncode != 0:
        return "the docker CLI has no compose plugin (`docker compose version` failed)"
    return None


@pytest.fixture(scope="module")
def image(tmp_path_factory, exported_version) -> Iterator[str]:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    context = tmp_path_factory.mktemp("image-context")
    shutil.copytree(PROJECT_ROOT / "docker", context / "docker")
    shutil.copytree(exported_version, context / contract.MODEL_BASE_DIR / "1")
    tag = f"imdb-sentiment-serving:test-{uuid.uuid4().hex[:8]}"
    build = docker(
        "build",
        "-f",
        str(context / "docker" / "Dockerfile"),
        "--build-arg",
        "MODEL_VERSION=1",
        "-t",
        tag,
        str(context),
        timeout=1800,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    yield tag
    docker("rmi", "-f", tag)


@pytest.fixture(scope="module")
def container(image) -> Iterator[tuple[str, int, int]]:
    rest_port, grpc_port = free_port(), free_port()
    run = docker(
        "run",
        "--detach",
        "--init",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "-p",
        f"127.0.0.1:{rest_port}:{contract.REST_PORT}",
        "-p",
        f"127.0.0.1:{grpc_port}:{contract.GRPC_PORT}",
        image,
    )
    assert run.returncode == 0, run.stderr
    container_id = run.stdout.strip()
    yield container_id, rest_port, grpc_port
    docker("rm", "--force", container_id)


def test_image_serves_the_contract_over_rest_and_grpc(container):
    _, rest_port, grpc_port = container
    result = run_python(
        "scripts/smoke_test.py",
        "--rest-url",
        f"http://127.0.0.1:{rest_port}",
        "--grpc-target",
        f"127.0.0.1:{grpc_port}",
        "--model-name",
        contract.MODEL_NAME,
        "--deadline",
        "180",
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_runs_as_a_numeric_non_root_user(image):
    user = docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0


def test_image_refuses_to_build_without_a_model_version(tmp_path):
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    shutil.copytree(PROJECT_ROOT / "docker", tmp_path / "docker")
    build = docker("build", "-f", str(tmp_path / "docker" / "Dockerfile"), str(tmp_path))
    assert build.returncode != 0
    assert "Pass --build-arg MODEL_VERSION" in build.stdout + build.stderr


def test_compose_file_is_valid():
    problem = compose_problem()
    if problem:
        pytest.skip(problem)
    result = docker(
        "compose",
        "-f",
        str(PROJECT_ROOT / "docker" / "docker-compose.yml"),
        "config",
        "--quiet",
        env=os.environ | {"MODEL_VERSION": "1"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    missing = docker(
        "compose",
        "-f",
        str(PROJECT_ROOT / "docker" / "docker-compose.yml"),
        "config",
        "--quiet",
        env={k: v for k, v in os.environ.items() if k != "MODEL_VERSION"},
        timeout=60,
    )
    assert missing.returncode != 0 and "MODEL_VERSION" in missing.stderr
