"""Shared fixtures: a tiny model trained once per test session, and servers on free ports."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TINY_TRAINING, free_port
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
