"""Fixtures of the Docker tests: the engine, the base images, a tiny model, the serving image.

Without an engine (or compose v2) the tests skip with the reason; under CI=true that is a
failure instead, so CI can never silently lose the group (`make test` starts an engine as root,
scripts/docker_engine.sh).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.dockerlib import (
    STANDIN_BUILD,
    DockerObjects,
    build,
    docker,
    engine_problem,
    serving_context,
    unique,
)
from tests.helpers import PROJECT_ROOT, TINY_TRAINING, skip_or_fail


@pytest.fixture(scope="session")
def docker_engine() -> None:
    problem = engine_problem()
    if problem:
        skip_or_fail(problem)


@pytest.fixture(scope="session")
def base_images(docker_engine) -> dict[str, str]:
    """TF_SERVING_IMAGE and PYTHON_IMAGE: the pinned images if they can be pulled, else the
    stand-ins (tests/docker/standin/), built or reused."""
    result = subprocess.run(
        [str(STANDIN_BUILD)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode != 0:
        message = f"cannot build the stand-in base images:\n{result.stderr[-3000:]}"
        if "debootstrap is missing" in result.stderr:
            skip_or_fail(message)
        raise AssertionError(message)
    return dict(line.split("=", 1) for line in result.stdout.split())


@pytest.fixture(scope="session")
def mlp_version(tmp_path_factory, demo_csv) -> Path:
    """A tiny MLP trained on the demo set and exported as version 1 (only one family: the
    image does not depend on it, and each build takes time)."""
    from training.config import TrainConfig
    from training.sources import DataSource
    from training.train import train_and_export

    base = tmp_path_factory.mktemp("docker-models") / "imdb"
    result = train_and_export(
        DataSource(demo_csv, "demo"), TrainConfig(model="mlp", **TINY_TRAINING), base
    )
    return result.export_path


@pytest.fixture(scope="session")
def serving_image(base_images, mlp_version, tmp_path_factory) -> Iterator[str]:
    """docker/Dockerfile built on the base image with the tiny model as version 1."""
    context = serving_context(tmp_path_factory.mktemp("serving-context"), mlp_version)
    tag = build(
        "docker/Dockerfile",
        context,
        unique("imdb-sentiment-serving"),
        {"MODEL_VERSION": "1", "TF_SERVING_IMAGE": base_images["TF_SERVING_IMAGE"]},
    )
    yield tag
    docker("rmi", "--force", tag)


@pytest.fixture
def docker_objects(docker_engine) -> Iterator[DockerObjects]:
    objects = DockerObjects()
    yield objects
    objects.remove_all()
