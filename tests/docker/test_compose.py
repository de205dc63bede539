"""docker/docker-compose.yml with compose v2 on a real engine: the smoke profile end to end (the
smoke image built and run against the server once it is healthy), and `docker compose stop`
under load within the file's stop_grace_period."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.docker.dockerlib import (
    Container,
    ca_bundle,
    docker,
    unique,
    wait_for_health,
)
from tests.docker.faults import stop_under_load
from tests.docker.test_faults import (
    STOP_REVIEW,
    STOP_REVIEWS_PER_REQUEST,
    compose_service,
    image_drain_seconds,
    keep,
)
from tests.helpers import PROJECT_ROOT, free_port

pytestmark = pytest.mark.docker

COMPOSE_FILE = PROJECT_ROOT / "docker" / "docker-compose.yml"


@dataclass
class Project:
    """A compose project of the shipped file, under its own name and ports."""

    name: str
    env: dict[str, str]

    def compose(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", "compose", "-p", self.name, "-f", str(COMPOSE_FILE), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env,
        )

    def container(self, service: str) -> Container:
        ids = self.compose("ps", "--all", "--quiet", service).stdout.split()
        assert len(ids) == 1, ids
        return Container(ids[0], int(self.env["REST_PORT"]), int(self.env["GRPC_PORT"]))

    def remove(self) -> None:
        """Removes the project's containers, networks and volumes by id."""
        label = f"label=com.docker.compose.project={self.name}"
        for kind, listing in (
            ("container", ["ps", "--all", "--quiet", "--filter", label]),
            ("network", ["network", "ls", "--quiet", "--filter", label]),
            ("volume", ["volume", "ls", "--quiet", "--filter", label]),
        ):
            ids = docker(*listing).stdout.split()
            if ids:
                remove = ["rm", "--force"] if kind == "container" else [kind, "rm", "--force"]
                docker(*remove, *ids)


@pytest.fixture
def project(serving_image, base_images) -> Iterator[Project]:
    smoke_image = unique("imdb-sentiment-smoke")
    bundle = ca_bundle()
    env = os.environ | {
        "MODEL_VERSION": "1",
        # The image built by the fixture: compose uses it and builds only the smoke image.
        "IMAGE": serving_image,
        "SMOKE_IMAGE": smoke_image,
        "PYTHON_IMAGE": base_images["PYTHON_IMAGE"],
        "REST_PORT": str(free_port()),
        "GRPC_PORT": str(free_port()),
    }
    if bundle:
        env["PIP_CA_BUNDLE"] = bundle
    project = Project(unique("imdb-compose"), env)
    yield project
    project.remove()
    docker("rmi", "--force", smoke_image)


def test_compose_smoke_profile_passes(project):
    build = project.compose("--profile", "smoke", "build", "smoke")
    assert build.returncode == 0, build.stderr[-3000:]
    up = project.compose("--profile", "smoke", "up", "--exit-code-from", "smoke")
    output = up.stdout + up.stderr
    assert up.returncode == 0, output[-5000:]
    assert "smoke test passed" in output


def test_compose_stop_under_load_within_the_grace_period(project):
    grace = float(compose_service()["stop_grace_period"].removesuffix("s"))
    drain = image_drain_seconds()
    up = project.compose("up", "--detach", "--no-build", "tfserving")
    assert up.returncode == 0, up.stderr[-3000:]
    container = project.container("tfserving")
    wait_for_health(container, "healthy", timeout=180)
    result = stop_under_load(
        container,
        lambda: project.compose("stop", "tfserving", timeout=60),
        how="docker compose stop",
        drain_seconds=drain,
        reviews_per_request=STOP_REVIEWS_PER_REQUEST,
        review=STOP_REVIEW,
    )
    keep("stop-compose", result.as_dict())
    assert result.in_flight_at_sigterm > 0 and result.in_flight_failed == 0, result
    assert result.exit_code == 143, result
    assert drain <= result.stop_seconds < grace, result
