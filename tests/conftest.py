"""Shared fixtures: a tiny model trained once per test session, and servers on free ports."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, TINY_TRAINING, loopback_server
from training.config import MODEL_FAMILIES

# Quiet TensorFlow's C++ logging in the test process and in the servers it starts.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def demo_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.demo_data import write_demo_csv

    return write_demo_csv(tmp_path_factory.mktemp("demo") / "reviews.csv")


@pytest.fixture(scope="session", params=MODEL_FAMILIES)  # the same serving tests for both
def trained_model(request, tmp_path_factory: pytest.TempPathFactory, demo_csv: Path):
    """(base_dir, TrainResult) of a tiny model trained on the demo set and exported as version 1,
    once per model family.

    Tests must not write into this base dir; copy the version elsewhere to change it.
    """
    from training.config import TrainConfig
    from training.sources import DataSource
    from training.train import train_and_export

    base_dir = tmp_path_factory.mktemp("models") / "imdb"
    result = train_and_export(
        DataSource(demo_csv, "demo"), TrainConfig(model=request.param, **TINY_TRAINING), base_dir
    )
    return base_dir, result


@pytest.fixture(scope="session")
def exported_version(trained_model) -> Path:
    """Path of the exported version folder (models/imdb/1)."""
    return trained_model[1].export_path


@pytest.fixture(scope="module")
def local_server(trained_model) -> Iterator:
    """The local server in this process, serving the tiny model over REST and gRPC."""
    base_dir, _ = trained_model
    server = loopback_server(
        model_name="imdb",
        model_base_path=str(base_dir),
        enable_grpc_healthcheck_service=True,
        max_request_bytes=4 * 1024 * 1024,
    )
    server.start(load_timeout=120)
    yield server
    server.stop(grace_seconds=2)


@pytest.fixture
def rest_url(local_server) -> str:
    return f"http://127.0.0.1:{local_server.rest_port}"


@pytest.fixture
def grpc_target(local_server) -> str:
    return f"127.0.0.1:{local_server.grpc_port}"


@pytest.fixture
def server_on_copy(tmp_path, exported_version) -> Iterator[Callable]:
    """Starts the local server in this process on a copy of the exported version (as version 1
    under ``tmp_path/imdb``), with extra ``ServerOptions``; returns (server, base path). Every
    server it started is stopped after the test."""
    started = []

    def start(**options):
        base = tmp_path / "imdb"
        shutil.copytree(exported_version, base / "1")
        server = loopback_server(model_name="imdb", model_base_path=str(base), **options)
        server.start(load_timeout=120)
        started.append(server)
        return server, base

    yield start
    for server in started:
        server.stop(grace_seconds=2)


@pytest.fixture
def monitored_server(server_on_copy):
    """The local server as the image runs it: Prometheus metrics and batching on."""
    server, _ = server_on_copy(
        monitoring_config_file=str(PROJECT_ROOT / "k8s/base/config/monitoring.config"),
        enable_batching=True,
    )
    return server
