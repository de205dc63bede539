"""The rendered base Deployment's pod (kubectl kustomize k8s/base) run for real under podman
(`podman kube play`): its startup, readiness and liveness probes answer, and the server runs with
the pod spec's user, read-only root, ConfigMap files and args.

From the rendered documents only the Deployment and the ConfigMap it mounts are played (podman
4.3 runs neither HPA, Service, PDB, NetworkPolicy, ServiceAccount nor Namespace). Changed: one
replica, the image (the serving image built for these tests, moved from Docker into podman's
store), and the Deployment's name (unique per run, so that a leftover pod never clashes).
Everything else is as rendered: args, ConfigMap files, securityContext, probes, the /tmp
emptyDir. Podman 4.3 runs none of the spec's probes (it turns only an exec, httpGet or tcpSocket
livenessProbe into a healthcheck, and ours is gRPC), so the test makes each probe's request
itself, to the pod's IP and the probe's port, as the kubelet would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.docker.dockerlib import STATUS_PATH, unique
from tests.docker.podlib import (
    KUBE_NETWORK,
    Pod,
    Podman,
    container,
    containers_conf,
    playable,
    podman_problem,
    wait_for_pod,
)
from tests.helpers import PROJECT_ROOT, run_tool, skip_or_fail

pytestmark = pytest.mark.docker

CONFIG_DIR = PROJECT_ROOT / "k8s" / "base" / "config"
# The image's entrypoint, which the Deployment's args follow (docker/Dockerfile ENTRYPOINT).
ENTRYPOINT = "/usr/local/bin/serving-entrypoint"
# Where the entrypoint writes its copy of the batching file, with num_batch_threads added, and
# passes it to the server in the place of the ConfigMap's (docker/serving-entrypoint.sh).
DERIVED_BATCHING = "/tmp/tfserving-batching.config"
# The folder of the version baked into the serving image (conftest.py: MODEL_VERSION=1), owned by
# the server's user.
MODEL_VERSION_DIR = "/models/imdb/1"


@pytest.fixture(scope="module")
def rendered_base() -> list[dict]:
    """The documents of k8s/base, rendered by the pinned kubectl's kustomize (`make tools`)."""
    tools_bin = Path(os.environ.get("TOOLS_BIN", PROJECT_ROOT / ".tools" / "bin"))
    if not (tools_bin / "kubectl").exists():
        skip_or_fail(f"no kubectl in {tools_bin}; run `make tools`")
    output = run_tool(tools_bin, "kubectl", "kustomize", "k8s/base")
    assert output.returncode == 0, f"k8s/base does not render:\n{output.stderr}"
    return [doc for doc in yaml.safe_load_all(output.stdout) if doc]


@pytest.fixture(scope="module")
def podman(docker_engine) -> Iterator[Podman]:
    """The podman CLI with its containers.conf; what the tests make with it is removed at the
    end, and so is the containers.conf."""
    problem = podman_problem()
    if problem:
        skip_or_fail(problem)
    folder = Path(tempfile.mkdtemp(prefix="imdb-pod-test-"))
    runner = Podman(containers_conf(folder / "containers.conf"))
    try:
        yield runner
    finally:
        runner.remove_all()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def played(rendered_base, serving_image, podman) -> list[dict]:
    """The documents played: the Deployment (last) and its ConfigMap, on the serving image."""
    image = podman.pull_from_docker(serving_image)
    return playable(rendered_base, unique("imdb-sentiment"), image)


@pytest.fixture(scope="module")
def pod(played, podman) -> Pod:
    """The pod, once its startup probe's request succeeds (within the probe's own budget)."""
    volumes, networks = podman.names("volume"), podman.names("network")
    images = podman.names("image")
    try:
        pod_id = podman.play(played, Path(podman.conf).with_name("deployment.yaml"))
    finally:
        # What podman makes for the pod and leaves behind after `kube down`: a volume per
        # ConfigMap (named after it), the kube network and the pause image on first use. Only
        # those that were not there before are this test's to remove.
        config_maps = {doc["metadata"]["name"] for doc in played[:-1]}
        podman.volumes += sorted(config_maps - volumes)
        podman.networks += [KUBE_NETWORK] if KUBE_NETWORK not in networks else []
        podman.images += sorted(podman.names("image") - images - set(podman.images))
    result = Pod.of(podman, pod_id, "tfserving")
    # The emptyDir is an anonymous volume; kube down removes it with the container, and should
    # it not, it is removed with the others.
    podman.volumes += [
        mount["Name"]
        for mount in result.inspect()["Mounts"]
        if mount["Type"] == "volume" and mount["Name"] not in volumes | set(podman.volumes)
    ]
    startup = container(played[-1])["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    wait_for_pod(result, lambda: succeeds(http_probe(result, played, "startupProbe")), budget)
    return result


# How the test reaches the pod: on its IP on podman's bridge network (10.89.0.0/24, CNI), which
# rootful podman routes from the host. That is where the kubelet sends its probes (pod IP and
# containerPort), and it needs no edit of the rendered ports. A hostPort on a free loopback port
# works under podman 4.3 too (CNI portmap), but it changes the pod spec and a port picked free
# may be taken before podman binds it. No proxy is asked for either address.
def port_number(played: list[dict], port) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    ports = {item["name"]: item["containerPort"] for item in container(played[-1])["ports"]}
    return ports[port]


def http_probe(pod: Pod, played: list[dict], probe_name: str) -> requests.Response | None:
    """The request of a container's httpGet probe, to the pod's IP; None when it gets no
    answer."""
    probe = container(played[-1])[probe_name]
    get = probe["httpGet"]
    url = f"http://{pod.ip}:{port_number(played, get['port'])}{get['path']}"
    with requests.Session() as session:
        session.trust_env = False
        try:
            return session.get(url, timeout=probe["timeoutSeconds"])
        except requests.RequestException:
            return None


def succeeds(response: requests.Response | None) -> bool:
    """The kubelet's rule for an httpGet probe: a status from 200 to 399."""
    return response is not None and 200 <= response.status_code < 400


def rendered_args(played: list[dict]) -> list[str]:
    return container(played[-1])["args"]


def config_map(played: list[dict]) -> tuple[dict, str]:
    """The ConfigMap the tfserving container mounts, and its mount path."""
    pod_spec = played[-1]["spec"]["template"]["spec"]
    volumes = {v["name"]: v["configMap"]["name"] for v in pod_spec["volumes"] if "configMap" in v}
    mounts = [m for m in container(played[-1])["volumeMounts"] if m["name"] in volumes]
    assert len(mounts) == 1, mounts
    by_name = {doc["metadata"]["name"]: doc for doc in played[:-1]}
    return by_name[volumes[mounts[0]["name"]]], mounts[0]["mountPath"]


def test_pod_answers_its_startup_and_readiness_probes(pod, played):
    for probe_name in ("startupProbe", "readinessProbe"):
        assert container(played[-1])[probe_name]["httpGet"]["path"] == STATUS_PATH
        response = http_probe(pod, played, probe_name)
        assert response is not None, f"{probe_name}: no answer from {pod.ip}"
        assert response.status_code == 200, (probe_name, response.status_code, response.text)
        assert '"AVAILABLE"' in response.text, response.text


def test_pod_answers_its_liveness_probe_on_the_grpc_health_service(pod, played):
    probe = container(played[-1])["livenessProbe"]
    target = f"{pod.ip}:{port_number(played, probe['grpc']['port'])}"
    # A probe without `service` asks for the server's overall health, the empty service name.
    request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(request, timeout=probe["timeoutSeconds"])
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_every_process_runs_as_the_pod_specs_user(pod, played):
    security = container(played[-1])["securityContext"]
    assert security["runAsUser"] == 10001 and security["runAsNonRoot"] is True
    processes = pod.processes()
    assert any("tensorflow_model_server" in " ".join(cmd) for _, _, cmd in processes), processes
    assert {uid for _, uid, _ in processes} == {security["runAsUser"]}, processes


def test_root_filesystem_is_read_only_and_the_tmp_empty_dir_is_writable(pod, played):
    assert container(played[-1])["securityContext"]["readOnlyRootFilesystem"] is True
    # The model folder belongs to the server's user: only a read-only root stops this write.
    refused = pod.exec("/usr/bin/touch", f"{MODEL_VERSION_DIR}/written-by-the-test")
    assert refused.returncode != 0 and "Read-only file system" in refused.stderr, refused
    written = pod.exec("/usr/bin/touch", "/tmp/written-by-the-test")
    assert written.returncode == 0, written.stderr
    tmp = [m for m in pod.inspect()["Mounts"] if m["Destination"] == "/tmp"]
    assert len(tmp) == 1 and tmp[0]["RW"], tmp


def test_ops_config_files_are_the_config_maps(pod, played):
    source, mount_path = config_map(played)
    assert mount_path == "/etc/tfserving/ops"
    # The image bakes the same files there: the mount is what tells the ConfigMap's apart.
    mounts = [m for m in pod.inspect()["Mounts"] if m["Destination"] == mount_path]
    assert len(mounts) == 1 and mounts[0]["Name"] == source["metadata"]["name"], mounts
    assert not mounts[0]["RW"], mounts
    assert sorted(source["data"]) == sorted(path.name for path in CONFIG_DIR.iterdir())
    for name, content in source["data"].items():
        assert content == (CONFIG_DIR / name).read_text(), name
        inside = pod.exec("/usr/bin/cat", f"{mount_path}/{name}")
        assert inside.returncode == 0 and inside.stdout == content, (name, inside.stderr)


def test_server_command_line_has_every_arg_of_the_deployment(pod, played):
    args = rendered_args(played)
    processes = [cmd for _, _, cmd in pod.processes()]
    # The entrypoint gets the Deployment's args as they are: they replace the image's CMD only.
    entrypoint = [cmd for cmd in processes if cmd[-len(args) - 1 :] == [ENTRYPOINT, *args]]
    assert entrypoint, processes
    servers = [
        cmd[cmd.index(part) + 1 :]
        for cmd in processes
        for part in cmd
        if part.endswith("/tensorflow_model_server")
    ]
    assert len(servers) == 1, processes
    server = servers[0]
    # The server gets each arg too, besides the thread flags the entrypoint adds, except the
    # batching file: since the ConfigMap's sets no num_batch_threads, the entrypoint passes its
    # copy under /tmp with one thread per CPU added.
    batching = next(arg for arg in args if arg.startswith("--batching_parameters_file="))
    missing = [arg for arg in args if arg != batching and arg not in server]
    assert missing == [], f"not in the server's command line {server}: {missing}"
    assert f"--batching_parameters_file={DERIVED_BATCHING}" in server, server
    assert batching not in server, server
    copy = pod.exec("/usr/bin/cat", DERIVED_BATCHING)
    source, _ = config_map(played)
    assert copy.stdout.startswith(source["data"]["batching.config"]), copy.stdout
    assert "num_batch_threads { value: " in copy.stdout, copy.stdout
