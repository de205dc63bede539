"""The serving image (docker/Dockerfile), built and run on a real engine: the contract over
REST and gRPC in a hardened container, the user, what it writes, its HEALTHCHECK, the thread
flags its entrypoint derives from the container's CPUs, and the binary's flag parsing."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator

import pytest
import requests

from serving import contract
from tests.docker.dockerlib import (
    STATUS_PATH,
    Container,
    DockerObjects,
    docker,
    wait_for_health,
    wait_until_available,
)
from tests.helpers import PROJECT_ROOT, run_python, skip_or_fail, wait_for

pytestmark = pytest.mark.docker

# The hardening compose and Kubernetes apply (docker-compose.yml, k8s/base/deployment.yaml).
HARDENED = (
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)
METRICS_PATH = contract.METRICS_PATH


def image_cmd(image: str) -> list[str]:
    inspect = docker("image", "inspect", "--format", "{{json .Config.Cmd}}", image, check=True)
    return json.loads(inspect.stdout)


def predict(container: Container, text: str = "A wonderful film.") -> dict:
    response = requests.post(
        f"{container.rest_url}{STATUS_PATH}:predict", json={"instances": [text]}, timeout=30
    )
    response.raise_for_status()
    return response.json()


@pytest.fixture(scope="module")
def module_objects(docker_engine) -> Iterator[DockerObjects]:
    objects = DockerObjects()
    yield objects
    objects.remove_all()


@pytest.fixture(scope="module")
def hardened(serving_image, module_objects) -> Container:
    container = module_objects.run(serving_image, options=HARDENED)
    wait_until_available(container)
    return container


def test_hardened_container_serves_the_contract_over_rest_and_grpc(hardened):
    result = run_python(
        "scripts/smoke_test.py",
        "--rest-url",
        hardened.rest_url,
        "--grpc-target",
        hardened.grpc_target,
        "--model-name",
        contract.MODEL_NAME,
        "--deadline",
        "60",
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_process_runs_as_the_numeric_non_root_user(serving_image, hardened):
    user = docker("image", "inspect", "--format", "{{.Config.User}}", serving_image).stdout
    uid, _, gid = user.strip().partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit()
    processes = docker("top", hardened.id, "-o", "pid,uid,args", check=True).stdout.splitlines()
    assert len(processes) > 1 and all(line.split()[1] == uid for line in processes[1:]), processes


def test_nothing_is_written_outside_tmp(serving_image, docker_objects):
    # A writable root this time, so that docker diff can show any write at all.
    container = docker_objects.run(serving_image)
    wait_until_available(container)
    predict(container)
    assert requests.get(container.rest_url + METRICS_PATH, timeout=10).ok
    changes = docker("diff", container.id, check=True).stdout.split("\n")
    outside = [line for line in changes if line and not line.split()[1].startswith("/tmp")]
    assert outside == [], f"written outside /tmp: {outside}"


def test_healthcheck_goes_from_starting_to_healthy(serving_image, docker_objects):
    container = docker_objects.run(serving_image, options=HARDENED)
    seen = wait_for_health(container, "healthy", timeout=180)
    assert seen[0] == "starting", seen
    assert "unhealthy" not in seen


def test_healthcheck_stays_unhealthy_while_the_model_folder_is_empty(serving_image, docker_objects):
    # The image's own check command, with shorter timings so that the test need not wait out
    # the 120 s start period; an empty tmpfs hides the baked version.
    container = docker_objects.run(
        serving_image,
        options=(
            *HARDENED,
            "--mount",
            f"type=tmpfs,destination={contract.CONTAINER_MODEL_BASE_PATH}",
            "--health-interval=1s",
            "--health-start-period=1s",
            "--health-retries=2",
        ),
    )
    wait_for_health(container, "unhealthy", timeout=60)
    # Still unhealthy some checks later, and the server still waiting for a version.
    assert wait_for_health(container, "unhealthy", timeout=5) == ["unhealthy"]
    assert container.state()["Running"]
    wait_for(
        lambda: "No versions of servable imdb found" in container.logs(),
        timeout=60,
        what="the server saying that it waits for a version",
    )


@pytest.mark.parametrize(
    ("limit", "cpus"), [(("--cpus=1",), 1), (("--cpuset-cpus=0",), 1), ((), None)]
)
def test_thread_flags_follow_the_containers_cpus(serving_image, docker_objects, limit, cpus):
    if os.cpu_count() < 2:
        skip_or_fail("needs at least 2 CPUs to tell a limit from the machine")
    cpus = cpus or len(os.sched_getaffinity(0))
    container = docker_objects.run(serving_image, options=(*HARDENED, *limit))
    wait_until_available(container)
    arguments = container.server_command_line()
    for flag, value in (
        ("tensorflow_intra_op_parallelism", cpus),
        ("tensorflow_inter_op_parallelism", cpus),
        ("rest_api_num_threads", 4 * cpus),
        ("grpc_max_threads", 4 * cpus),
    ):
        assert f"--{flag}={value}" in arguments, arguments
    batching = docker("exec", container.id, "cat", "/tmp/tfserving-batching.config").stdout
    assert f"num_batch_threads {{ value: {cpus} }}" in batching
    assert "--batching_parameters_file=/tmp/tfserving-batching.config" in arguments


def test_an_explicit_thread_flag_wins_over_the_derived_one(serving_image, docker_objects):
    flags = [*image_cmd(serving_image), "--grpc_max_threads=3"]
    container = docker_objects.run(serving_image, *flags, options=(*HARDENED, "--cpus=1"))
    wait_until_available(container)
    arguments = container.server_command_line()
    assert [a for a in arguments if a.startswith("--grpc_max_threads")] == ["--grpc_max_threads=3"]
    assert "--rest_api_num_threads=4" in arguments


def test_a_misspelled_flag_is_only_a_warning_to_the_server(serving_image, docker_objects):
    """Why our command lines are checked offline (tests/deploy): the binary, and the stand-in
    with it, says `unknown argument` and serves with the default."""
    flags = [*image_cmd(serving_image), "--enable_batchng=false"]
    container = docker_objects.run(serving_image, *flags, options=HARDENED)
    wait_until_available(container)
    assert "unknown argument: --enable_batchng=false" in container.logs()


def test_image_refuses_to_build_without_a_model_version(base_images, tmp_path):
    shutil.copytree(PROJECT_ROOT / "docker", tmp_path / "docker")
    result = docker(
        "build",
        "--build-arg",
        f"TF_SERVING_IMAGE={base_images['TF_SERVING_IMAGE']}",
        "-f",
        str(tmp_path / "docker" / "Dockerfile"),
        str(tmp_path),
    )
    assert result.returncode != 0
    assert "Pass --build-arg MODEL_VERSION" in result.stdout + result.stderr
