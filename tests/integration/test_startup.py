"""Start-up of the local server: options are checked before anything runs, and a start that
fails, like a stop, leaves no thread, no port and no loaded model behind."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from serving.client import GrpcClient
from serving.model_server.server import ModelServer, ServerOptions, StartupError
from tests.helpers import free_port, wait_for


@pytest.fixture
def base(tmp_path, exported_version) -> Path:
    """A model base path holding a copy of the exported version as version 1."""
    shutil.copytree(exported_version, tmp_path / "imdb" / "1")
    return tmp_path / "imdb"


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port that a listening socket of the test holds."""
    with socket.create_server(("127.0.0.1", 0)) as held:
        yield held.getsockname()[1]


def server_options(**options) -> ServerOptions:
    defaults = dict(
        port=free_port(),
        rest_api_port=free_port(),
        bind_address="127.0.0.1",
        model_name="imdb",
        enable_batching=True,
    )
    return ServerOptions(**(defaults | options))


def assert_no_new_threads(before: set[threading.Thread]) -> None:
    """Every thread started since ``before`` ends (within a few seconds: a stopped gRPC server
    lets its polling thread finish on its own)."""
    wait_for(lambda: not set(threading.enumerate()) - before, 10, "the server's threads ended")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_bad_options_fail_before_a_thread_starts(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'imdb' base_path: 'relative' } }")
    before = set(threading.enumerate())
    with pytest.raises(StartupError, match="to have an absolute path"):
        ModelServer(server_options(model_name="", model_config_file=str(config)))
    assert set(threading.enumerate()) == before


def test_a_failed_rest_bind_leaves_nothing_running(base, taken_port):
    grpc_port = free_port()
    before = set(threading.enumerate())
    server = ModelServer(
        server_options(port=grpc_port, rest_api_port=taken_port, model_base_path=str(base))
    )
    message = f"Failed to start HTTP Server at 127.0.0.1:{taken_port}: .*Address already in use"
    with pytest.raises(StartupError, match=message):
        server.start(load_timeout=120)
    assert not listening(grpc_port)  # gRPC had started, and was stopped
    assert_no_new_threads(before)  # batching, the model manager, gRPC, waitress
    server.stop()  # nothing left to stop


def test_a_failed_grpc_bind_leaves_nothing_running(base, taken_port):
    before = set(threading.enumerate())
    server = ModelServer(server_options(port=taken_port, model_base_path=str(base)))
    with pytest.raises(StartupError, match=f"Cannot bind gRPC to 127.0.0.1:{taken_port}"):
        server.start(load_timeout=120)
    assert_no_new_threads(before)


def test_stop_ends_every_thread_the_server_started(base):
    before = set(threading.enumerate())
    server = ModelServer(server_options(model_base_path=str(base)))
    server.start(load_timeout=120)
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/imdb:predict"
        assert requests.post(url, json={"instances": ["fine"]}, timeout=30).status_code == 200
        with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
            assert len(client.predict(["fine"])) == 1
    finally:
        server.stop(grace_seconds=2)
    assert not listening(server.grpc_port) and not listening(server.rest_port)
    assert_no_new_threads(before)
