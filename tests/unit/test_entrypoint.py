"""docker/serving-entrypoint.sh outside a container: the CPU count it reads from cgroup v1 and
v2 files (a fake tree under CGROUP_ROOT), the flags it adds and leaves to the user, the batching
file it writes, and its drain on SIGTERM. A fake server stands in for tensorflow_model_server:
it records its arguments and, like the binary, has no signal handler. (tests/docker runs the
entrypoint in the real image, under real CPU limits.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, wait_for

ENTRYPOINT = PROJECT_ROOT / "docker" / "serving-entrypoint.sh"
AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture
def fake_server(tmp_path) -> Path:
    script = tmp_path / "tensorflow_model_server"
    script.write_text(
        '#!/bin/bash\nprintf "%s\\n" "$@" > "$ARGS_FILE"\necho $$ > "$PID_FILE"\nexec sleep 600\n'
    )
    script.chmod(0o755)
    return script


def start(tmp_path, fake_server, *args: str, cgroup: dict[str, str] | None = None, **env):
    root = tmp_path / "cgroup"
    for name, text in (cgroup or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    environment = os.environ | {
        "TF_SERVING_BINARY": str(fake_server),
        "CGROUP_ROOT": str(root),
        "TMPDIR": str(tmp_path),
        "ARGS_FILE": str(tmp_path / "args"),
        "PID_FILE": str(tmp_path / "server.pid"),
        "TF_SERVING_DRAIN_SECONDS": "0",
        **env,
    }
    process = subprocess.Popen(
        ["bash", str(ENTRYPOINT), *args],
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: (tmp_path / "server.pid").exists(), timeout=10, what="the fake server")
    wait_for(lambda: (tmp_path / "args").read_text(), timeout=10, what="its arguments")
    return process


def server_args(tmp_path) -> list[str]:
    return (tmp_path / "args").read_text().split()


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


@pytest.mark.parametrize(
    ("cgroup", "cpus"),
    [
        ({"cpu.max": "100000 100000\n"}, 1),  # v2, one CPU
        ({"cpu.max": "150000 100000\n"}, 1),  # v2, 1.5 rounds down
        ({"cpu.max": "max 100000\n"}, AFFINITY),  # v2, no quota
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # at least 1
        ({"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
         AFFINITY),  # v1, no quota
        ({"cpu/cpu.cfs_quota_us": "6400000\n", "cpu/cpu.cfs_period_us": "100000\n"},
         AFFINITY),  # a quota above the cpuset: the cpuset wins
        ({}, AFFINITY),  # no cgroup files at all
    ],
)  # fmt: skip
def test_thread_flags_come_from_the_smaller_of_quota_and_affinity(
    tmp_path, fake_server, cgroup, cpus
):
    process = start(tmp_path, fake_server, "--port=8500", cgroup=cgroup)
    try:
        assert server_args(tmp_path) == [
            f"--tensorflow_intra_op_parallelism={cpus}",
            f"--tensorflow_inter_op_parallelism={cpus}",
            f"--rest_api_num_threads={4 * cpus}",
            f"--grpc_max_threads={4 * cpus}",
            "--port=8500",
        ]
    finally:
        stop(process)
    assert f"{cpus} CPUs (affinity {AFFINITY}" in process.stderr.read()


def test_flags_given_to_the_container_win(tmp_path, fake_server):
    process = start(
        tmp_path,
        fake_server,
        "--grpc_max_threads=3",
        "--tensorflow_session_parallelism=2",
        cgroup={"cpu.max": "100000 100000\n"},
    )
    try:
        assert server_args(tmp_path) == [
            "--rest_api_num_threads=4",
            "--grpc_max_threads=3",
            "--tensorflow_session_parallelism=2",
        ]
    finally:
        stop(process)


def test_batching_threads_go_into_a_copy_of_the_parameters_file(tmp_path, fake_server):
    parameters = tmp_path / "batching.config"
    parameters.write_text("max_batch_size { value: 512 }\n")
    process = start(
        tmp_path,
        fake_server,
        "--enable_batching=true",
        f"--batching_parameters_file={parameters}",
        cgroup={"cpu.max": "100000 100000\n"},
    )
    try:
        copy = tmp_path / "tfserving-batching.config"
        assert f"--batching_parameters_file={copy}" in server_args(tmp_path)
        assert copy.read_text().startswith("max_batch_size { value: 512 }\n")
        assert "num_batch_threads { value: 1 }" in copy.read_text()
    finally:
        stop(process)


def test_a_num_batch_threads_in_the_file_wins(tmp_path, fake_server):
    parameters = tmp_path / "batching.config"
    parameters.write_text("num_batch_threads { value: 7 }\n")
    process = start(
        tmp_path, fake_server, "--enable_batching", f"--batching_parameters_file={parameters}"
    )
    try:
        assert f"--batching_parameters_file={parameters}" in server_args(tmp_path)
        assert not (tmp_path / "tfserving-batching.config").exists()
    finally:
        stop(process)


def test_sigterm_drains_then_stops_the_server_and_exits_143(tmp_path, fake_server):
    process = start(tmp_path, fake_server, TF_SERVING_DRAIN_SECONDS="1.5")
    server_pid = int((tmp_path / "server.pid").read_text())
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    # Still serving during the drain: the server never saw the SIGTERM.
    assert process.poll() is None
    os.kill(server_pid, 0)
    assert process.wait(timeout=10) == 143
    assert 1.5 <= time.monotonic() - signalled < 5
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
    log = process.stderr.read()
    assert "SIGTERM: serving 1.5 s more" in log and "server stopped" in log


def test_a_second_signal_ends_the_drain_at_once(tmp_path, fake_server):
    process = start(tmp_path, fake_server, TF_SERVING_DRAIN_SECONDS="60")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None  # draining
    signalled = time.monotonic()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 143
    assert time.monotonic() - signalled < 5


def test_a_server_that_exits_by_itself_passes_its_exit_code_on(tmp_path):
    failing = tmp_path / "failing_server"
    failing.write_text("#!/bin/bash\necho 'Failed to start server. Error: x'\nexit 255\n")
    failing.chmod(0o755)
    result = subprocess.run(
        ["bash", str(ENTRYPOINT), "--port=8500"],
        env=os.environ | {"TF_SERVING_BINARY": str(failing), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 255
    assert "Failed to start server" in result.stdout
