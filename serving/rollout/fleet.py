"""Where the servers are: local processes polling ``models.config``, or pods mounting it.

A fleet does two things for a rollout step: ``apply`` makes the servers see the edited file,
and ``endpoints`` yields a REST URL per server for the waits and the canary comparison.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from serving.contract import MODELS_CONFIGMAP, REST_PORT
from serving.rollout import RolloutError

# The model-server pods of the overlays (k8s/base; tests/deploy/test_repository_mode.py checks).
POD_SELECTOR = "app.kubernetes.io/name=imdb-sentiment,app.kubernetes.io/component=model-server"
# The labels every object of the overlays carries (their kustomization.yaml).
KUSTOMIZE_LABELS = {
    "app.kubernetes.io/name": "imdb-sentiment",
    "app.kubernetes.io/part-of": "imdb-sentiment",
    "app.kubernetes.io/managed-by": "kustomize",
}
# Seconds a kubectl call other than port-forward may take.
KUBECTL_TIMEOUT_SECONDS = 120.0
# Seconds a port-forward gets to exit after SIGTERM before it is killed.
PORT_FORWARD_STOP_GRACE_SECONDS = 2.0
# The line kubectl port-forward prints once it listens (it then prints one per connection).
FORWARDING_LINE = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")
# Lines of kubectl's output kept for the error message when it exits without listening.
MAX_OUTPUT_LINES = 20


class LocalFleet:
    """Servers that poll ``models.config`` themselves (the local server, docker compose)."""

    def __init__(self, rest_urls: Sequence[str]):
        self.rest_urls = list(rest_urls)

    def apply(self, config_path: Path, dry_run: bool) -> None:
        """Nothing to do: the servers read the file."""

    @contextlib.contextmanager
    def endpoints(self) -> Iterator[list[str]]:
        yield self.rest_urls


class KubernetesFleet:
    """Pods that mount the ``imdb-models`` ConfigMap; reached one by one via port-forward.

    Args:
        namespace: the pods' namespace.
        kubectl: the kubectl command (its current context picks the cluster).
        timeout: seconds each port-forward may take to start listening.
    """

    def __init__(self, namespace: str, kubectl: str = "kubectl", timeout: float = 300.0):
        self.namespace = namespace
        self.kubectl = kubectl
        self.timeout = timeout

    def _command(self, *args: str) -> list[str]:
        return [self.kubectl, "-n", self.namespace, *args]

    def apply(self, config_path: Path, dry_run: bool) -> None:
        """Applies the ConfigMap exactly as the overlay renders it (name, namespace, labels)."""
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": MODELS_CONFIGMAP,
                "namespace": self.namespace,
                "labels": dict(KUSTOMIZE_LABELS),
            },
            "data": {"models.config": config_path.read_text()},
        }
        command = self._command("apply", "-f", "-")
        if dry_run:
            print(f"+ {' '.join(command)}   # ConfigMap {MODELS_CONFIGMAP} from {config_path}")
            return
        _run(command, stdin=json.dumps(config_map))

    @contextlib.contextmanager
    def endpoints(self) -> Iterator[list[str]]:
        """A local URL per running pod, each through its own port-forward; every forward is
        stopped on the way out, whatever happened.

        Raises:
            RolloutError: no pod runs, or a port-forward exits or does not listen in time.
        """
        names = _run(
            self._command(
                "get", "pods", "-l", POD_SELECTOR,
                "--field-selector=status.phase=Running", "-o", "name",
            )
        ).split()  # fmt: skip
        if not names:
            raise RolloutError(f"no running pods match {POD_SELECTOR} in {self.namespace}")
        forwards: list[PortForward] = []
        try:
            for name in names:
                forward = PortForward(self._command("port-forward", name, f":{REST_PORT}"))
                forwards.append(forward)
                forward.wait_until_listening(name, self.timeout)
            yield [forward.url for forward in forwards]
        finally:
            stop_all(forwards)


class PortForward:
    """One ``kubectl port-forward`` process and the local port it listens on.

    A thread reads its output for as long as it runs: the first line names the port, and the
    lines that follow (one per connection) must be read or kubectl blocks on a full pipe.
    """

    def __init__(self, command: list[str]):
        self.command = command
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        except OSError as error:
            raise RolloutError(f"{command[0]} failed: {error}") from error
        self.port: int | None = None
        self._output: list[str] = []  # what kubectl said before it listened
        self._settled = threading.Event()  # set once listening, or when the output ended
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        for line in self.process.stdout or ():
            if self.port is None:
                match = FORWARDING_LINE.search(line)
                if match:
                    self.port = int(match.group(1))
                    self._settled.set()
                elif len(self._output) < MAX_OUTPUT_LINES:
                    self._output.append(line.strip())
        self._settled.set()

    def wait_until_listening(self, pod: str, timeout: float) -> None:
        """Returns once kubectl says where it listens.

        Raises:
            RolloutError: kubectl exited first, or said nothing within ``timeout`` seconds.
        """
        if not self._settled.wait(timeout):
            raise RolloutError(
                f"kubectl port-forward {pod} printed no 'Forwarding from' line within "
                f"{timeout:.0f} s (--timeout): is the pod reachable from this machine?"
            )
        if self.port is None:
            said = "; ".join(line for line in self._output if line) or "no output"
            raise RolloutError(f"kubectl port-forward {pod} exited: {said}")

    def stop(self, deadline: float) -> None:
        """Waits for the process until ``deadline`` (after ``terminate``), then kills it, and
        always reaps it: no zombie is left behind."""
        try:
            self.process.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # The output ends with the process; close the pipe once the reader is done with it.
        self._reader.join(timeout=5)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()


def stop_all(forwards: Sequence[PortForward]) -> None:
    """Terminates every port-forward at once, then stops each within one shared grace."""
    for forward in forwards:
        if forward.process.poll() is None:
            forward.process.terminate()
    deadline = time.monotonic() + PORT_FORWARD_STOP_GRACE_SECONDS
    for forward in forwards:
        forward.stop(deadline)


def _run(command: list[str], stdin: str | None = None) -> str:
    """A kubectl call's output.

    Raises:
        RolloutError: kubectl is missing, timed out or failed (with its error output).
    """
    try:
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RolloutError(f"{command[0]} failed: {error}") from error
    if result.returncode != 0:
        raise RolloutError(f"{' '.join(command[:4])} ...: {result.stderr.strip()}")
    return result.stdout
