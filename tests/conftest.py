"""Shared fixtures: a tiny model trained once per test session, and servers on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.config import MODEL_FAMILIES

# Quiet TensorFlow's C++ logging in the test process and in the servers it starts.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Settings that train a usable model of either family on the demo set in a few seconds.
TINY_TRAINING = {
    "max_epochs": 20,
    "max_features": 2000,
    "hidden_units": 16,
    "batch_size": 32,
    "learning_rate": 3e-3,
    "sepcnn_sequence_length": 64,
    "sepcnn_embedding_dim": 16,
    "sepcnn_filters": 16,
}


def free_port() -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    from serving.model_server.server import ModelServer, ServerOptions

    base_dir, _ = trained_model
    server = ModelServer(
        ServerOptions(
            port=free_port(),
            rest_api_port=free_port(),
            model_name="imdb",
            model_base_path=str(base_dir),
            bind_address="127.0.0.1",
            enable_grpc_healthcheck_service=True,
            max_request_bytes=4 * 1024 * 1024,
        )
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


def run_python(*args: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Runs ``python <args>`` from the project root with the test environment."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
