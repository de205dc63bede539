"""What the pod test needs from podman: the CLI with a containers.conf this machine accepts, the
rendered Deployment cut down to what `podman kube play` runs, and everything it makes removed by
id (or by the unique name it was given) when the test ends, pass or fail.

Podman here is Debian's 4.3, rootful, with CNI networking; it needs catatonit (for the pause
image) and lower default rlimits than it asks for (DEFAULT_ULIMITS below).
"""

from __future__ import annotations

import copy
import json
import os
import resource
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.docker.dockerlib import host_process, run, wait_while_running

# podman's pause binary: `kube play` builds its infra image (localhost/podman-pause) from it.
CATATONIT = ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit")
# The default rlimits podman asks for (nofile 1048576) are above this machine's hard limits,
# and every container then fails with "error setting rlimit type 7" (then 6, nproc). These
# values are accepted there, capped at what this process may hand on.
DEFAULT_ULIMITS = {
    "nofile": (resource.RLIMIT_NOFILE, 20000),
    "nproc": (resource.RLIMIT_NPROC, 4096),
}
# Kinds of the rendered base that podman kube play 4.3 cannot run (HPA, Service, PDB,
# NetworkPolicy, ServiceAccount, Namespace): only the Deployment and its ConfigMaps are kept.
PLAYABLE_KINDS = ("Deployment", "ConfigMap")
# The network `kube play` puts pods on unless told otherwise; it creates it on first use and
# leaves it behind (a CNI conflist in /etc/cni/net.d).
KUBE_NETWORK = "podman-default-kube-network"


def podman_problem() -> str | None:
    """Why the pod cannot run under podman here, or None."""
    if shutil.which("podman") is None:
        return "no podman on PATH (make docker-engine installs Debian's podman and catatonit)"
    if not any(Path(path).exists() for path in CATATONIT):
        return "podman has no catatonit (its pause binary): apt-get install catatonit"
    if os.geteuid() != 0:
        # Rootless podman puts pods behind slirp4netns, whose addresses the host cannot reach.
        return "podman must run as root: the test reaches the pod on its IP, as a kubelet does"
    return None


def containers_conf(path: Path) -> Path:
    """Writes the containers.conf that lets containers start here (CONTAINERS_CONF=path)."""
    limits = []
    for name, (kind, wanted) in DEFAULT_ULIMITS.items():
        hard = resource.getrlimit(kind)[1]
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        limits.append(f'"{name}={value}:{value}"')
    path.write_text(f"[containers]\ndefault_ulimits = [{', '.join(limits)}]\n")
    return path


def playable(documents: list[dict], name: str, image: str) -> list[dict]:
    """The rendered Deployment and the ConfigMaps its pod mounts, as `podman kube play` takes
    them: one replica, the tfserving container on ``image``, the Deployment named ``name`` (its
    pod is then ``name``-pod-0). Everything else is left as rendered."""
    deployments = [doc for doc in documents if doc["kind"] == "Deployment"]
    assert len(deployments) == 1, [doc["kind"] for doc in documents]
    deployment = copy.deepcopy(deployments[0])
    deployment["metadata"]["name"] = name
    deployment["spec"]["replicas"] = 1
    pod = deployment["spec"]["template"]["spec"]
    container(deployment)["image"] = image
    mounted = {v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    config_maps = [
        doc
        for doc in documents
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] in mounted
    ]
    assert {doc["metadata"]["name"] for doc in config_maps} == mounted, "a ConfigMap is missing"
    return [*config_maps, deployment]


def container(deployment: dict, name: str = "tfserving") -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    return next(item for item in containers if item["name"] == name)


@dataclass
class Podman:
    """The podman CLI with CONTAINERS_CONF, and what a test made with it, removed at the end."""

    conf: Path
    binary: str = field(default_factory=lambda: shutil.which("podman") or "podman")
    kube_files: list[Path] = field(default_factory=list)
    pods: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def __call__(self, *args: str, timeout: float = 600, check: bool = False):
        """Runs ``podman ARGS`` with this machine's containers.conf."""
        env = {**os.environ, "CONTAINERS_CONF": str(self.conf)}
        return run([self.binary, *args], timeout, check, env)

    def names(self, what: str) -> set[str]:
        """The names of podman's volumes or networks, or its image IDs (``what``)."""
        flags = {"volume": ["--format", "{{.Name}}"], "network": ["--format", "{{.Name}}"]}
        listing = self(what, "ls", *flags.get(what, ["--quiet", "--no-trunc"]), check=True)
        return set(listing.stdout.split())

    def pull_from_docker(self, tag: str) -> str:
        """Copies ``tag`` from the Docker engine into podman's store; returns podman's name for
        it (docker.io/library/NAME:TAG), which is removed at the end."""
        reference = tag if ":" in tag.rsplit("/", 1)[-1] else f"{tag}:latest"
        image_id = self("pull", f"docker-daemon:{reference}", timeout=1800, check=True)
        image_id = image_id.stdout.split()[-1]
        inspect = self("image", "inspect", image_id, "--format", "{{json .RepoTags}}", check=True)
        name = next(n for n in json.loads(inspect.stdout) if n.endswith(f"/{reference}"))
        self.images.append(name)
        return name

    def play(self, documents: list[dict], path: Path) -> str:
        """``podman kube play`` of ``documents`` written to ``path``; returns the pod's ID."""
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        self.kube_files.append(path)
        result = self("kube", "play", str(path), timeout=300)
        # The pod's ID follows "Pod:"; after a failed start the pod exists without being named,
        # so it is found by its unique name too (kube down in remove_all removes it as well).
        words = result.stdout.split()
        if "Pod:" in words[:-1]:
            pod_id = words[words.index("Pod:") + 1]
            if len(pod_id) == 64 and all(char in "0123456789abcdef" for char in pod_id):
                self.pods.append(pod_id)
        name = documents[-1]["metadata"]["name"] + "-pod-0"
        listing = self("pod", "ps", "--quiet", "--no-trunc", "--filter", f"name=^{name}$")
        self.pods.extend(pod for pod in listing.stdout.split() if pod not in self.pods)
        if result.returncode != 0:
            raise AssertionError(f"podman kube play failed:\n{result.stderr[-3000:]}")
        return self.pods[0]

    def remove_all(self) -> None:
        """Removes, in this order, the pods (kube down, then by ID), the images, and the volumes
        and networks recorded as made by this test. Errors are ignored: each step is tried."""
        for path in self.kube_files:
            self("kube", "down", str(path), timeout=120)
        for pod in self.pods:
            if self("pod", "exists", pod).returncode == 0:
                self("pod", "rm", "--force", "--time", "5", pod, timeout=120)
        for image in self.images:
            # By name: it untags, and removes the image unless it has another name in the store.
            self("rmi", image, timeout=300)
        for volume in self.volumes:
            self("volume", "rm", volume)
        for network in self.networks:
            # Not forced: another pod may have come to use it meanwhile.
            self("network", "rm", network)
        for path in self.kube_files:
            path.unlink(missing_ok=True)


@dataclass
class Pod:
    """The played pod: its ID, its tfserving container's ID, and the pod's IP."""

    podman: Podman
    id: str
    container_id: str
    ip: str

    @classmethod
    def of(cls, podman: Podman, pod_id: str, container_name: str) -> Pod:
        pod = json.loads(podman("pod", "inspect", pod_id, check=True).stdout)
        pod = pod[0] if isinstance(pod, list) else pod
        by_name = {item["Name"]: item["Id"] for item in pod["Containers"]}
        wanted = [cid for name, cid in by_name.items() if name.endswith(f"-{container_name}")]
        assert len(wanted) == 1, f"no single {container_name} container in the pod: {by_name}"
        infra = json.loads(podman("inspect", pod["InfraContainerID"], check=True).stdout)[0]
        networks = infra["NetworkSettings"]["Networks"]
        addresses = [net["IPAddress"] for net in networks.values() if net.get("IPAddress")]
        assert addresses, f"the pod has no IP address: {networks}"
        return cls(podman, pod_id, wanted[0], addresses[0])

    def inspect(self) -> dict:
        return json.loads(self.podman("inspect", self.container_id, check=True).stdout)[0]

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def logs(self) -> str:
        result = self.podman("logs", self.container_id)
        return result.stdout + result.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        """``podman exec`` in the tfserving container, as its user; ``command`` is absolute."""
        return self.podman("exec", self.container_id, *command, timeout=60)

    def processes(self) -> list[tuple[int, int, list[str]]]:
        """(host PID, real uid, command line) of every process in the container, read from the
        host's /proc (the image has no ps)."""
        listing = self.podman("top", self.container_id, "hpid", check=True)
        return [(int(pid), *host_process(int(pid))) for pid in listing.stdout.split()[1:]]


def wait_for_pod(pod: Pod, ready, timeout: float) -> None:
    """Polls ``ready()`` until it is true; fails with the container's log if the container
    stops or the time runs out."""
    wait_while_running(ready, pod.running, pod.logs, timeout, "the pod ready")
