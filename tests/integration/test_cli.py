"""Command lines as a user runs them: the server process, the smoke test, the clients, training."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.client import RequestError, RestClient
from serving.contract import MODEL_NAME
from tests.helpers import PROJECT_ROOT, TINY_TRAINING, free_port, run_python, wait_for


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    def __init__(self, base: Path, log: Path, *extra: str):
        self.grpc_port, self.rest_port, self.log = free_port(), free_port(), log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving.model_server",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                "--model_name=imdb",
                f"--model_base_path={base}",
                "--file_system_poll_wait_seconds=0.2",
                "--bind_address=127.0.0.1",
                *extra,
            ],
            cwd=PROJECT_ROOT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )

    def running(self) -> bool:
        """True while the process runs; fails the test with the log's tail if it has exited."""
        assert self.process.poll() is None, self.log.read_text()[-2000:]
        return True

    def wait_ready(self, timeout: float = 120) -> None:
        """Waits until the server's own status reports a version AVAILABLE."""
        client = RestClient(f"http://127.0.0.1:{self.rest_port}", MODEL_NAME, timeout=2)

        def available() -> bool:
            self.running()
            try:
                return any(v.state == "AVAILABLE" for v in client.status())
            except RequestError:  # ports not open yet
                return False

        wait_for(available, timeout, "a version AVAILABLE")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def server_process(tmp_path_factory, exported_version) -> Iterator[ServerProcess]:
    """A server process started before any version exists; a version is added afterwards."""
    base = tmp_path_factory.mktemp("served") / "imdb"
    base.mkdir()
    server = ServerProcess(base, base.parent / "server.log")
    try:
        # No version yet: the process runs, the ports stay closed (TF Serving's start-up).
        wait_for(
            lambda: (
                server.running() and "No versions of servable imdb found" in server.log.read_text()
            ),
            timeout=60,
            what="the 'No versions' warning",
        )
        assert not port_open(server.rest_port) and not port_open(server.grpc_port)
        shutil.copytree(exported_version, base / ".incoming")
        (base / ".incoming").rename(base / "1")
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_ports_open_once_the_model_is_loaded(server_process):
    assert port_open(server_process.rest_port) and port_open(server_process.grpc_port)
    log = server_process.log.read_text()
    assert log.index("Successfully loaded servable version") < log.index("Running gRPC ModelServer")
    assert "Number of warmup records read: 2" in log


def test_smoke_script_passes_over_rest_and_grpc(server_process):
    result = run_python(
        "scripts/smoke_test.py",
        "--rest-url",
        f"http://127.0.0.1:{server_process.rest_port}",
        "--grpc-target",
        f"127.0.0.1:{server_process.grpc_port}",
        "--model-name",
        "imdb",
        "--deadline",
        "30",
    )
    assert result.returncode == 0, result.stderr
    assert "REST and gRPC agree" in result.stdout
    assert result.stdout.strip().endswith("smoke test passed")


def test_smoke_script_fails_with_a_one_line_reason(server_process):
    result = run_python(
        "scripts/smoke_test.py",
        "--rest-url",
        f"http://127.0.0.1:{server_process.rest_port}",
        "--model-name",
        "nosuch",
        "--deadline",
        "1",
    )
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert (
        line.startswith("smoke test FAILED:")
        and "Could not find any versions of model nosuch" in line
    )


def test_smoke_script_against_nothing_fails_at_its_deadline():
    started = time.monotonic()
    result = run_python(
        "scripts/smoke_test.py", "--grpc-target", f"127.0.0.1:{free_port()}", "--deadline", "2"
    )
    assert result.returncode == 1
    assert "DEADLINE_EXCEEDED" in result.stderr and time.monotonic() - started < 60


@pytest.mark.parametrize("transport", ["--rest-url", "--grpc-target"])
def test_predict_cli(server_process, transport):
    endpoint = (
        f"http://127.0.0.1:{server_process.rest_port}"
        if transport == "--rest-url"
        else f"127.0.0.1:{server_process.grpc_port}"
    )
    result = run_python(
        "-m",
        "serving",
        "predict",
        transport,
        endpoint,
        "A wonderful, brilliant film. Loved it.",
        "Awful and boring. A waste of time.",
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert " positive " in first and " negative " in second


def test_status_cli_reports_errors_with_exit_1(server_process):
    result = run_python(
        "-m", "serving", "status", "--rest-url", f"http://127.0.0.1:{server_process.rest_port}"
    )
    assert result.returncode == 0 and "version 1: AVAILABLE" in result.stdout
    missing = run_python(
        "-m",
        "serving",
        "status",
        "--rest-url",
        f"http://127.0.0.1:{server_process.rest_port}",
        "--model-name",
        "nosuch",
    )
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_sigterm_stops_the_server_cleanly(tmp_path, exported_version):
    base = tmp_path / "imdb"
    base.mkdir()
    shutil.copytree(exported_version, base / "1")
    server = ServerProcess(base, tmp_path / "server.log")
    server.wait_ready()
    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 15
    assert "Received SIGTERM" in server.log.read_text()


def test_bad_startup_exits_255_with_tf_serving_message(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { not valid")
    result = run_python(
        "-m",
        "serving.model_server",
        f"--model_config_file={config}",
        "--port=0",
        f"--rest_api_port={free_port()}",
    )
    assert result.returncode == 255
    assert "Failed to start server. Error:" in result.stdout


def test_unknown_flag_is_a_usage_error_and_known_flags_are_accepted(caplog):
    result = run_python("-m", "serving.model_server", "--no_such_flag=1")
    assert result.returncode == 2 and "unrecognized arguments" in result.stderr

    from serving.model_server.server import parse_options

    options = parse_options(
        [
            "--rest_api_port=1",
            "--enable_batching",
            "--xla_cpu_compilation_enabled=true",
            "--grpc_channel_arguments=grpc.max_connection_age_ms=30000",
            "--enable_model_warmup=false",
            "--model_base_path=/m",
        ]
    )
    assert options.rest_api_port == 1 and options.enable_model_warmup is False
    assert options.enable_batching is True
    assert "--xla_cpu_compilation_enabled is not implemented by the local server; ignored" in (
        caplog.text
    )
    assert options.grpc_channel_arguments == "grpc.max_connection_age_ms=30000"


def test_train_cli_exports_a_version(tmp_path, demo_csv):
    from training.__main__ import main

    overrides = [
        arg
        for key, value in TINY_TRAINING.items()
        for arg in (f"--{key.replace('_', '-')}", str(value))
    ]
    code = main(
        [
            "train",
            "--data",
            str(demo_csv),
            "--model-dir",
            str(tmp_path / "imdb"),
            *overrides,
            "--max-epochs",
            "3",
        ]
    )
    assert code == 0
    assert (tmp_path / "imdb" / "1" / "saved_model.pb").exists()


def test_train_cli_reports_bad_data_and_config(tmp_path, capsys):
    from training.__main__ import main

    bad = tmp_path / "bad.csv"
    bad.write_text("review,sentiment\ngreat,positive\nmeh,neutral\n")
    assert main(["train", "--data", str(bad), "--model-dir", str(tmp_path / "m")]) == 1
    assert f"{bad}: 1 row(s) with an unknown sentiment" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "missing.csv")]) == 1
    assert main(["train", "--dropout-rate", "1.5", "--data", str(bad)]) == 1
    assert "dropout_rate" in capsys.readouterr().err
    assert main(["train", "--no-such-flag"]) == 2
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_bench_cli_rejects_an_unknown_model_family(capsys):
    from training.__main__ import main

    assert main(["bench", "--data", "x.csv", "--families", "mlp,lstm"]) == 2
    assert "expected a comma-separated subset of mlp,sepcnn, got 'mlp,lstm'" in (
        capsys.readouterr().err
    )
