"""The faults a serving container meets, on a real engine: `docker stop` under load (the
entrypoint's drain: 0 failed of the requests in flight at SIGTERM, exit 143, well inside the
grace period; and, without the drain, what the binary alone does), and memory under the
compose limit through a sustained load with ten label flips.

Set FAULTS_REPORT_DIR to keep the figures (`make bench-containers` does, with longer loads).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import requests
import yaml

from serving import contract
from tests.deploy.manifests import dockerfile_env
from tests.docker.dockerlib import docker, wait_until_available
from tests.docker.faults import REVIEW, memory_under_load, stop_under_load
from tests.docker.test_image import HARDENED, image_cmd
from tests.helpers import PROJECT_ROOT, wait_for

pytestmark = pytest.mark.docker

# docker stop's own grace period before SIGKILL (its default).
DOCKER_STOP_TIMEOUT = 10
# Requests under the stop: 256 reviews of IMDB's length (the review repeated to ~700 words),
# long enough (hundreds of ms) that a request in flight at SIGTERM is still running when a
# server without a drain dies, a few tens of milliseconds after `docker stop` is called.
STOP_REVIEWS_PER_REQUEST = 256
STOP_REVIEW = " ".join([REVIEW] * 50)
# The memory run: seconds of load and label flips, and the version served twice (the benchmark,
# make bench-containers, sets FAULTS_MEMORY_SECONDS and FAULTS_MODEL_VERSION_DIR to a real one).
MEMORY_SECONDS = float(os.environ.get("FAULTS_MEMORY_SECONDS", "60"))
MEMORY_MODEL_VERSION_DIR = os.environ.get("FAULTS_MODEL_VERSION_DIR")
LABEL_FLIPS = 10


def image_drain_seconds() -> float:
    return float(dockerfile_env("TF_SERVING_DRAIN_SECONDS"))


def compose_service() -> dict:
    compose = yaml.safe_load((PROJECT_ROOT / "docker" / "docker-compose.yml").read_text())
    return compose["services"]["tfserving"]


def keep(name: str, result: dict) -> None:
    """Writes ``result`` to FAULTS_REPORT_DIR/<name>.json when that variable is set."""
    folder = os.environ.get("FAULTS_REPORT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


def test_docker_stop_under_load_fails_no_request_in_flight(serving_image, docker_objects):
    drain = image_drain_seconds()
    container = docker_objects.run(serving_image, options=HARDENED)
    wait_until_available(container)
    result = stop_under_load(
        container,
        lambda: docker("stop", container.id, timeout=60),
        how="docker stop",
        drain_seconds=drain,
        reviews_per_request=STOP_REVIEWS_PER_REQUEST,
        review=STOP_REVIEW,
    )
    keep("stop-docker", result.as_dict())
    assert result.in_flight_at_sigterm > 0, result
    assert result.in_flight_failed == 0, result
    assert result.exit_code == 143, result  # SIGTERM handled; 137 would be docker's SIGKILL
    assert drain <= result.stop_seconds < DOCKER_STOP_TIMEOUT, result
    assert not result.oom_killed


def test_without_the_drain_the_requests_in_flight_fail(serving_image, docker_objects):
    """What the binary does alone (TF_SERVING_DRAIN_SECONDS=0: SIGTERM reaches it at once),
    and proof that the count above can see a failure."""
    container = docker_objects.run(
        serving_image, options=(*HARDENED, "--env", "TF_SERVING_DRAIN_SECONDS=0")
    )
    wait_until_available(container)
    result = stop_under_load(
        container,
        lambda: docker("stop", container.id, timeout=60),
        how="docker stop, no drain",
        drain_seconds=0,
        reviews_per_request=STOP_REVIEWS_PER_REQUEST,
        review=STOP_REVIEW,
    )
    keep("stop-docker-no-drain", result.as_dict())
    assert result.in_flight_failed > 0, result
    assert result.exit_code == 143, result


def test_memory_under_the_compose_limit_through_load_and_label_flips(
    serving_image, docker_objects, mlp_version, tmp_path
):
    """Two versions under /models/imdb and a models.config whose `stable` label moves between
    them ten times while the load runs (the server re-reads the file every second)."""
    limit = compose_service()["mem_limit"]
    models = tmp_path / "models" / contract.MODEL_NAME
    for version in (1, 2):
        shutil.copytree(MEMORY_MODEL_VERSION_DIR or mlp_version, models / str(version))
    config = tmp_path / "config" / "models.config"
    config.parent.mkdir()

    def write_config(stable: int) -> None:
        config.write_text(
            "model_config_list { config { name: 'imdb' base_path: '/models/imdb' "
            "model_platform: 'tensorflow' model_version_policy { specific { versions: 1 "
            f"versions: 2 }} }} version_labels {{ key: 'stable' value: {stable} }} }} }}\n"
        )

    write_config(stable=1)
    os.chmod(config.parent, 0o755)
    flags = [
        flag
        for flag in image_cmd(serving_image)
        if not flag.startswith(("--model_config_file=", "--file_system_poll_wait_seconds="))
    ]
    container = docker_objects.run(
        serving_image,
        *flags,
        "--model_config_file=/etc/tfserving/repository/models.config",
        "--model_config_file_poll_wait_seconds=1",
        "--file_system_poll_wait_seconds=1",
        options=(
            *HARDENED,
            f"--memory={limit}",
            "--cpus=2",
            "--volume",
            f"{models}:/models/imdb:ro",
            "--volume",
            f"{config.parent}:/etc/tfserving/repository:ro",
        ),
    )
    wait_until_available(container)

    def flip(index: int) -> None:
        write_config(stable=2 if index % 2 == 0 else 1)

    result = memory_under_load(
        container, flip, limit_bytes=_bytes(limit), seconds=MEMORY_SECONDS, flips=LABEL_FLIPS
    )
    model = "the tiny test MLP"
    if MEMORY_MODEL_VERSION_DIR:
        model = os.path.relpath(MEMORY_MODEL_VERSION_DIR, PROJECT_ROOT)
    keep("memory", {**result.as_dict(), "model": model})
    assert result.flips == LABEL_FLIPS and result.running and not result.oom_killed, result
    assert result.failed == 0, result
    assert result.peak_mib < result.limit_mib
    # The last flip took effect: the label resolves to the version it names.
    wanted = "2" if (LABEL_FLIPS - 1) % 2 == 0 else "1"
    wait_for(lambda: stable_version(container) == wanted, timeout=10, what=f"stable -> {wanted}")


def stable_version(container) -> str:
    url = f"{container.rest_url}/v1/models/{contract.MODEL_NAME}/labels/stable/metadata"
    return requests.get(url, timeout=5).json()["model_spec"]["version"]


def _bytes(size: str | int) -> int:
    if isinstance(size, int):
        return size
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    return int(size[:-1]) * units[size[-1].lower()] if size[-1].isalpha() else int(size)
