"""Ship a new model version safely: publish, canary, promote, roll back. docs/deploy.md.

    python -m serving rollout publish  --repository R --version-dir models/imdb/N
    python -m serving rollout init     --config models.config --repository R --version N
    python -m serving rollout canary   --config models.config [--version N] --rest-url URL ...
    python -m serving rollout promote  --config models.config --rest-url URL ...
    python -m serving rollout rollback --config models.config --rest-url URL ...
    python -m serving rollout status   --config models.config --rest-url URL ...

The servers read their versions from a **model repository** (``serving/repository.py``): a
folder, ``gs://`` or ``s3://`` (through the sync sidecar). ``models.config`` says which versions
they load and what the labels point at; it is the whole rollout state, and every step below is
one edit of it. The servers poll it (``--model_config_file_poll_wait_seconds``), so no step
restarts or rebuilds anything. On Kubernetes (``--namespace``), the file is applied as the
ConfigMap the pods mount; the file in the overlay stays the source of truth (commit it).

- **publish**: check an export against the serving contract (as ``make train`` does), then
  upload it; it becomes visible only when complete (its manifest is written last).
- **init**: write a first ``models.config`` whose ``stable`` is a published version.
- **canary N** (default: the highest published version): (1) load N beside ``stable`` and wait
  until every server has it AVAILABLE; a version that fails to load is taken out of the config
  again and the command says why (``stable`` never stops serving); (2) point ``canary`` at N;
  (3) smoke-test ``/labels/canary`` on every server; (4) compare canary with stable on reference
  reviews (agreement, probability shift, p99 latency, errors) against thresholds and print a
  verdict (exit 1 on FAIL; the canary stays up for a look until ``rollback``).
- **promote**: ``stable`` -> the canary's version; the old one stays loaded as ``previous``.
- **rollback**: withdraw a canary (``canary`` and its version leave the config) or, after a
  promote, move ``stable`` back to ``previous``. The version rolled back from is unloaded.

A label only moves to a version that is AVAILABLE on every server, which is TF Serving's own
rule for labels (it refuses the reload otherwise), so requests to ``/labels/stable`` never fail
during a step. ``--dry-run`` prints the new ``models.config`` (and the kubectl commands) and
changes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.cli_args import DEFAULT_TIMEOUT_SECONDS, EXIT_FAILED, EXIT_OK, EXIT_USAGE, parse_args
from serving.client import RequestError, RestClient
from serving.contract import MODEL_NAME, REST_PORT
from serving.loadtest import LoadTestError, percentile, read_reviews
from serving.model_config import ModelConfigError, model_entry, read_model_server_config
from serving.repository import FolderRepository, RepositoryError, open_repository
from serving.versions import version_number

STABLE, CANARY, PREVIOUS = "stable", "canary", "previous"
# Kubernetes names, owned by k8s/base and the repository overlays (a test checks them).
NAMESPACE = "imdb-serving"
MODELS_CONFIGMAP = "imdb-models"
POD_SELECTOR = "app.kubernetes.io/name=imdb-sentiment,app.kubernetes.io/component=model-server"
# The labels every object of the overlays carries (their kustomization.yaml).
KUSTOMIZE_LABELS = {
    "app.kubernetes.io/name": "imdb-sentiment",
    "app.kubernetes.io/part-of": "imdb-sentiment",
    "app.kubernetes.io/managed-by": "kustomize",
}
METRICS_PATH = "/monitoring/prometheus/metrics"
# Latency samples per label in a canary comparison, at least.
MIN_REQUESTS_PER_LABEL = 300


class RolloutError(Exception):
    """A step cannot go on; the message says why and what state the servers are in."""


# ------------------------------------------------------------------------------------------------
# models.config: the rollout state


def labels_of(model: model_server_config_pb2.ModelConfig) -> dict[str, int]:
    return {label: int(version) for label, version in model.version_labels.items()}


def with_state(
    config: model_server_config_pb2.ModelServerConfig,
    versions: Sequence[int],
    labels: dict[str, int],
    model_name: str = MODEL_NAME,
) -> model_server_config_pb2.ModelServerConfig:
    """A copy of ``config`` whose model serves exactly ``versions`` with ``labels``."""
    new = model_server_config_pb2.ModelServerConfig()
    new.CopyFrom(config)
    model = model_entry(new, model_name)
    model.model_version_policy.specific.Clear()
    model.model_version_policy.specific.versions.extend(sorted(set(versions)))
    model.version_labels.clear()
    for label in (STABLE, CANARY, PREVIOUS):
        if label in labels:
            model.version_labels[label] = labels[label]
    return new


def config_text(config: model_server_config_pb2.ModelServerConfig) -> str:
    return text_format.MessageToString(config)


def write_config(path: Path, config: model_server_config_pb2.ModelServerConfig) -> None:
    """Replaces the file atomically: a server polling it reads the old or the new config."""
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=f".{path.name}.", delete=False
    ) as stream:
        stream.write(config_text(config))
    os.chmod(stream.name, 0o644)
    os.replace(stream.name, path)


# ------------------------------------------------------------------------------------------------
# Where the servers are: local processes polling the file, or pods mounting the ConfigMap


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
    """Pods that mount the ``imdb-models`` ConfigMap; reached one by one via port-forward."""

    def __init__(self, namespace: str, kubectl: str = "kubectl"):
        self.namespace = namespace
        self.kubectl = kubectl

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
        names = _run(
            self._command(
                "get", "pods", "-l", POD_SELECTOR,
                "--field-selector=status.phase=Running", "-o", "name",
            )
        ).split()  # fmt: skip
        if not names:
            raise RolloutError(f"no running pods match {POD_SELECTOR} in {self.namespace}")
        forwards: list[subprocess.Popen] = []
        try:
            urls = []
            for name in names:
                forward = subprocess.Popen(
                    self._command("port-forward", name, f":{REST_PORT}"),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                forwards.append(forward)
                line = forward.stdout.readline() if forward.stdout else ""
                match = re.search(r"127\.0\.0\.1:(\d+)", line)
                if not match:
                    raise RolloutError(f"kubectl port-forward {name} failed: {line.strip()}")
                urls.append(f"http://127.0.0.1:{match.group(1)}")
                # kubectl writes a line per connection: keep reading so it never blocks.
                threading.Thread(target=forward.stdout.read, daemon=True).start()
            yield urls
        finally:
            for forward in forwards:
                forward.terminate()


def _run(command: list[str], stdin: str | None = None) -> str:
    try:
        result = subprocess.run(
            command, input=stdin, capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RolloutError(f"{command[0]} failed: {error}") from error
    if result.returncode != 0:
        raise RolloutError(f"{' '.join(command[:4])} ...: {result.stderr.strip()}")
    return result.stdout


# ------------------------------------------------------------------------------------------------
# Waiting for every server


def wait_for_all(
    urls: Sequence[str], problem: Callable[[RestClient], str | None], what: str, timeout: float
) -> None:
    """Polls every server until ``problem`` returns None for each.

    ``problem`` returns what still keeps a server from the goal, or raises RolloutError when it
    never will (a version that failed to load).

    Raises:
        RolloutError: a server can never get there, or the timeout passed (naming each server
            still pending and its last problem).
    """
    deadline = time.monotonic() + timeout
    clients = {url: RestClient(url, timeout=DEFAULT_TIMEOUT_SECONDS) for url in urls}
    last: dict[str, str] = {}
    try:
        while clients:
            for url, client in list(clients.items()):
                try:
                    found = problem(client)
                except RolloutError as error:
                    raise RolloutError(f"{url}: {error}") from error
                if found is None:
                    clients.pop(url).close()
                else:
                    last[url] = found
            if not clients:
                return
            if time.monotonic() > deadline:
                details = "; ".join(f"{url}: {last.get(url, '?')}" for url in clients)
                raise RolloutError(
                    f"timed out after {timeout:.0f} s waiting until {what} ({details})"
                )
            time.sleep(0.5)
    finally:
        for client in clients.values():
            client.close()


def _available_problem(client: RestClient, version: int) -> str | None:
    """None once ``version`` is AVAILABLE on this server.

    Raises:
        RolloutError: the version failed to load (END with an error: TF Serving does not retry).
    """
    try:
        status = {s.version: s for s in client.status()}.get(version)
    except RequestError as error:
        return str(error)
    if status is None:
        return f"version {version} not known yet"
    if status.state == "END" and status.error_code != "OK":
        raise RolloutError(f"version {version} failed to load: {status.error_message}")
    return None if status.state == "AVAILABLE" else f"version {version} is {status.state}"


def _label_problem(client: RestClient, label: str, version: int | None) -> str | None:
    """None when ``label`` resolves to ``version`` (or, for None, is unknown) on this server."""
    try:
        served = client.metadata(label=label).version
    except RequestError as error:
        if version is None and error.code == "INVALID_ARGUMENT":
            return None
        return str(error)
    if served == version:
        return None
    return f"label {label!r} points at version {served}"


# ------------------------------------------------------------------------------------------------
# Comparing canary and stable


@dataclass(frozen=True)
class Thresholds:
    # Defaults that pass an honest retrain and fail a broken model: two full-data MLPs (20k and
    # 5k n-gram features) agreed on 96.9% of the shipped reviews with a mean shift of 0.051,
    # where an inverted or broken model lands near 50% and 0.5.
    min_agreement: float = 0.90
    max_mean_shift: float = 0.10
    # Canary p99 may exceed stable's by this factor, or by max_p99_slack_ms, whichever is larger
    # (one noisy millisecond on a fast model must not fail a canary).
    max_p99_ratio: float = 1.5
    max_p99_slack_ms: float = 5.0
    max_error_rate: float = 0.0
    # Non-OK requests in the servers' own counters during the comparison, over all their traffic
    # (TF Serving counts per model, not per version): real clients' bad requests count too.
    max_server_error_rate: float = 0.01


@dataclass(frozen=True)
class Comparison:
    reviews: int  # distinct reference reviews (agreement and shift are over these)
    requests: int  # requests per label (latency and errors are over these)
    agreement: float
    mean_shift: float
    max_shift: float
    p99_ms: dict[str, float]
    errors: dict[str, int]
    # (non-OK, all) requests in the servers' metrics during the comparison; None without metrics.
    server_requests: tuple[int, int] | None

    def checks(self, limits: Thresholds) -> list[tuple[str, bool]]:
        stable_p99, canary_p99 = self.p99_ms[STABLE], self.p99_ms[CANARY]
        allowed_p99 = max(stable_p99 * limits.max_p99_ratio, stable_p99 + limits.max_p99_slack_ms)
        error_rate = self.errors[CANARY] / max(self.requests, 1)
        checks = [
            (
                f"label agreement {self.agreement:.1%} (minimum {limits.min_agreement:.1%})",
                self.agreement >= limits.min_agreement,
            ),
            (
                f"mean probability shift {self.mean_shift:.4f} (maximum {limits.max_mean_shift}; "
                f"largest {self.max_shift:.4f})",
                self.mean_shift <= limits.max_mean_shift,
            ),
            (
                f"p99 latency canary {canary_p99:.1f} ms vs stable {stable_p99:.1f} ms "
                f"(maximum {allowed_p99:.1f} ms)",
                canary_p99 <= allowed_p99,
            ),
            (
                f"canary errors {self.errors[CANARY]}/{self.requests} requests "
                f"(maximum rate {limits.max_error_rate:.1%}), stable errors {self.errors[STABLE]}",
                error_rate <= limits.max_error_rate,
            ),
        ]
        if self.server_requests is not None:
            non_ok, total = self.server_requests
            rate = non_ok / max(total, 1)
            checks.append(
                (
                    f"servers' metrics during the comparison: {non_ok} non-OK of {total} "
                    f"requests ({rate:.1%}; maximum {limits.max_server_error_rate:.1%})",
                    rate <= limits.max_server_error_rate,
                )
            )
        return checks


def server_request_counts(url: str) -> tuple[int, int] | None:
    """(non-OK, all) of one server's ``:tensorflow:serving:request_count``, or None when it
    exposes no metrics."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = requests.get(url.rstrip("/") + METRICS_PATH, timeout=DEFAULT_TIMEOUT_SECONDS)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    non_ok = total = 0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == ":tensorflow:serving:request_count":
                total += int(sample.value)
                if sample.labels.get("status", "OK") not in ("OK", ""):
                    non_ok += int(sample.value)
    return non_ok, total


def compare(
    urls: Sequence[str], reviews: Sequence[str], min_requests: int = MIN_REQUESTS_PER_LABEL
) -> Comparison:
    """Sends every review, one per request, to ``stable`` and ``canary`` in turn, spread over
    the servers; the two labels see the same load at the same time. A short reference set is
    sent again until each label has ``min_requests`` latencies (a p99 of 32 samples would be
    their maximum, one noisy request); agreement counts each review once."""
    before = [server_request_counts(url) for url in urls]
    latencies: dict[str, list[float]] = {STABLE: [], CANARY: []}
    errors = {STABLE: 0, CANARY: 0}
    shifts, agree = [], 0
    clients = [RestClient(url, timeout=DEFAULT_TIMEOUT_SECONDS) for url in urls]
    try:
        rounds = max(1, math.ceil(min_requests / max(len(reviews), 1)))
        for index, review in enumerate(list(reviews) * rounds):
            first_round = index < len(reviews)
            client = clients[index % len(clients)]
            answers = {}
            order = (STABLE, CANARY) if index % 2 == 0 else (CANARY, STABLE)
            for label in order:
                started = time.perf_counter()
                try:
                    answers[label] = client.predict([review], label=label)[0]
                except RequestError:
                    errors[label] += 1
                    continue
                latencies[label].append((time.perf_counter() - started) * 1000)
            if len(answers) == 2 and first_round:
                agree += answers[STABLE].label == answers[CANARY].label
                shifts.append(abs(answers[STABLE].probability - answers[CANARY].probability))
    finally:
        for client in clients:
            client.close()
    after = [server_request_counts(url) for url in urls]
    server_requests = None
    if all(counts is not None for counts in before + after):
        pairs = list(zip(after, before, strict=True))
        server_requests = (
            sum(a[0] - b[0] for a, b in pairs),  # type: ignore[index]
            sum(a[1] - b[1] for a, b in pairs),  # type: ignore[index]
        )
    return Comparison(
        reviews=len(reviews),
        requests=len(reviews) * rounds,
        agreement=agree / max(len(shifts), 1),
        mean_shift=sum(shifts) / max(len(shifts), 1),
        max_shift=max(shifts, default=0.0),
        p99_ms={label: percentile(values, 0.99) for label, values in latencies.items()},
        errors=errors,
        server_requests=server_requests,
    )


# ------------------------------------------------------------------------------------------------
# The verbs


@dataclass
class Rollout:
    config_path: Path
    fleet: LocalFleet | KubernetesFleet
    dry_run: bool = False
    timeout: float = 300.0
    model_name: str = MODEL_NAME

    def _apply(self, config: model_server_config_pb2.ModelServerConfig, step: str) -> None:
        print(f"==> {step}")
        if self.dry_run:
            print(f"models.config would become ({self.config_path}):")
            print("    " + config_text(config).replace("\n", "\n    ").rstrip())
            self.fleet.apply(self.config_path, dry_run=True)
            return
        write_config(self.config_path, config)
        self.fleet.apply(self.config_path, dry_run=False)

    def state(self) -> tuple[model_server_config_pb2.ModelServerConfig, list[int], dict[str, int]]:
        config = read_model_server_config(self.config_path)
        model = model_entry(config, self.model_name)
        labels = labels_of(model)
        if STABLE not in labels:
            raise RolloutError(
                f"{self.config_path} has no '{STABLE}' label: start from a repository overlay's "
                "models.config (docs/deploy.md)"
            )
        return config, list(model.model_version_policy.specific.versions), labels

    def canary(self, version: int | None, repository_url: str | None) -> int:
        """Returns the canary's version. ``repository_url`` defaults to the config's base path."""
        config, _, labels = self.state()
        stable = labels[STABLE]
        repository_url = repository_url or model_entry(config, self.model_name).base_path
        repository = open_repository(repository_url)
        if isinstance(repository, FolderRepository) and not repository.path.is_dir():
            raise RolloutError(
                f"the repository {repository_url} is not a folder on this machine: pass "
                "--repository (on EKS, REPOSITORY=s3://bucket/imdb)"
            )
        published = repository.published_versions()
        if version is None:
            if not published:
                raise RolloutError(f"no published version in {repository_url}: run make publish")
            version = published[-1]
        if version not in published:
            raise RolloutError(
                f"version {version} is not published in {repository_url} "
                f"(published: {published or 'none'}): run make publish"
            )
        if version == stable:
            raise RolloutError(f"version {version} is already '{STABLE}'")
        if CANARY in labels and labels[CANARY] != stable:
            raise RolloutError(
                f"version {labels[CANARY]} is already the '{CANARY}': promote it or roll it back "
                "first (make promote, make rollback-model)"
            )
        kept = [stable] + ([labels[PREVIOUS]] if PREVIOUS in labels else [])
        kept_labels = {k: v for k, v in labels.items() if k in (STABLE, PREVIOUS)}
        staged = with_state(config, [*kept, version], kept_labels, self.model_name)
        self._apply(staged, f"Loading version {version} beside {STABLE} version {stable}")
        if self.dry_run:
            self._apply(
                with_state(config, [*kept, version], {**kept_labels, CANARY: version}),
                f"Pointing '{CANARY}' at version {version}",
            )
            return version
        with self.fleet.endpoints() as urls:
            try:
                wait_for_all(
                    urls,
                    lambda client: _available_problem(client, version),
                    f"version {version} is AVAILABLE on every server",
                    self.timeout,
                )
            except RolloutError as error:
                self._apply(config, f"Restoring the previous models.config ({STABLE} unchanged)")
                raise RolloutError(
                    f"canary aborted, {STABLE} version {stable} keeps serving: {error}"
                ) from error
            print(f"    version {version} is AVAILABLE on every server")
            self._apply(
                with_state(config, [*kept, version], {**kept_labels, CANARY: version}),
                f"Pointing '{CANARY}' at version {version}",
            )
            self._wait_label(urls, CANARY, version)
        return version

    def promote(self) -> int:
        config, _, labels = self.state()
        if CANARY not in labels or labels[CANARY] == labels[STABLE]:
            raise RolloutError(f"no '{CANARY}' to promote: run make canary first")
        stable, canary = labels[STABLE], labels[CANARY]
        new = with_state(config, [stable, canary], {STABLE: canary, PREVIOUS: stable})
        self._apply(new, f"'{STABLE}' -> version {canary}; version {stable} kept as '{PREVIOUS}'")
        if not self.dry_run:
            with self.fleet.endpoints() as urls:
                self._wait_label(urls, STABLE, canary)
        return canary

    def rollback(self) -> int:
        config, _, labels = self.state()
        stable = labels[STABLE]
        if CANARY in labels and labels[CANARY] != stable:
            canary = labels[CANARY]
            kept = {k: v for k, v in labels.items() if k in (STABLE, PREVIOUS)}
            new = with_state(config, list(kept.values()), kept)
            self._apply(
                new, f"Withdrawing the canary (version {canary}); '{STABLE}' stays {stable}"
            )
            label, expected, result = CANARY, None, stable
        elif PREVIOUS in labels:
            previous = labels[PREVIOUS]
            new = with_state(config, [previous], {STABLE: previous})
            self._apply(new, f"'{STABLE}' -> version {previous} (back from {stable})")
            label, expected, result = STABLE, previous, previous
        else:
            raise RolloutError(f"nothing to roll back: no '{CANARY}' and no '{PREVIOUS}' label")
        if not self.dry_run:
            with self.fleet.endpoints() as urls:
                self._wait_label(urls, label, expected)
        return result

    def _wait_label(self, urls: Sequence[str], label: str, version: int | None) -> None:
        what = (
            f"'{label}' points at version {version} on every server"
            if version is not None
            else f"'{label}' is gone on every server"
        )
        wait_for_all(
            urls, lambda client: _label_problem(client, label, version), what, self.timeout
        )
        print(f"    {what}")


# ------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving rollout", description=__doc__.split("\n")[0]
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    publish = verbs.add_parser("publish", help="check an export and upload it to the repository")
    publish.add_argument("--repository", required=True, help="folder, gs://… or s3://…")
    publish.add_argument("--version-dir", type=Path, required=True, help="e.g. models/imdb/3")
    publish.add_argument("--version", type=int, help="default: the folder's name")
    publish.add_argument("--dry-run", action="store_true")
    init = verbs.add_parser("init", help="write a first models.config (stable = VERSION)")
    init.add_argument("--config", type=Path, required=True, help="the models.config to write")
    init.add_argument("--repository", required=True, help="where versions are published")
    init.add_argument(
        "--base-path", help="the servers' model base path, if not the repository (EKS: the pod's)"
    )
    init.add_argument("--version", type=int, help="default: the highest published")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    for name, text in (
        ("canary", "load a version beside stable, label it canary, smoke-test and compare"),
        ("promote", "move stable to the canary's version (the old one stays as previous)"),
        ("rollback", "withdraw the canary, or move stable back to previous"),
        ("status", "show the labels in models.config and on every server"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("--config", type=Path, required=True, help="the models.config to edit")
        target = verb.add_mutually_exclusive_group(required=True)
        target.add_argument(
            "--rest-url", action="append", help="a server's REST URL (repeat per server)"
        )
        target.add_argument("--namespace", help="Kubernetes: apply the ConfigMap, reach every pod")
        verb.add_argument("--kubectl", default="kubectl")
        verb.add_argument("--timeout", type=float, default=300.0, help="seconds per wait")
        verb.add_argument("--dry-run", action="store_true")
        if name == "canary":
            verb.add_argument("--version", type=int, help="default: the highest published")
            verb.add_argument(
                "--repository", help="default: models.config's base_path (EKS: the s3:// URL)"
            )
            verb.add_argument(
                "--reviews", type=Path, help="reference reviews, text or CSV (default: shipped)"
            )
            verb.add_argument(
                "--max-reviews", type=int, default=1000, help="use at most this many of them"
            )
            defaults = Thresholds()
            for field_name in Thresholds.__dataclass_fields__:
                verb.add_argument(
                    "--" + field_name.replace("_", "-"),
                    type=float,
                    default=getattr(defaults, field_name),
                )
    return parser


def _publish(args: argparse.Namespace) -> None:
    version = args.version if args.version is not None else version_number(args.version_dir.name)
    if version is None:
        raise RolloutError(f"{args.version_dir} is not a version folder: pass --version")
    if not args.version_dir.is_dir():
        raise RolloutError(f"{args.version_dir} does not exist")
    from training.export import ExportError, verify_export

    try:
        verify_export(args.version_dir)
    except ExportError as error:
        raise RolloutError(f"refusing to publish: {error}") from error
    except Exception as error:  # a folder TensorFlow cannot load at all
        raise RolloutError(f"refusing to publish {args.version_dir}: {error}") from error
    repository = open_repository(args.repository)
    if args.dry_run:
        print(f"Would publish {args.version_dir} as version {version} to {repository.url}")
        return
    manifest = repository.publish(args.version_dir, version)
    print(
        f"Published version {version} to {repository.version_url(version)} "
        f"({len(manifest.files)} files, {manifest.total_bytes / 1e6:.1f} MB)"
    )


def initial_config(base_path: str, version: int) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(
        name=MODEL_NAME, base_path=base_path, model_platform="tensorflow"
    )
    model.model_version_policy.specific.versions.append(version)
    model.version_labels[STABLE] = version
    return config


def _init(args: argparse.Namespace) -> None:
    if args.config.exists() and not args.force:
        raise RolloutError(f"{args.config} exists: pass --force to overwrite it")
    published = open_repository(args.repository).published_versions()
    version = args.version if args.version is not None else (published or [None])[-1]
    if version is None or version not in published:
        raise RolloutError(
            f"version {version} is not published in {args.repository} "
            f"(published: {published or 'none'}): run make publish"
        )
    args.config.parent.mkdir(parents=True, exist_ok=True)
    base_path = args.base_path or args.repository
    write_config(args.config, initial_config(base_path, version))
    print(f"Wrote {args.config}: '{STABLE}' is version {version} of {base_path}")


def _status(rollout: Rollout) -> None:
    _, versions, labels = rollout.state()
    labels = dict(sorted(labels.items()))
    print(f"models.config: versions {versions}, labels {labels}")
    with rollout.fleet.endpoints() as urls:
        for url in urls:
            with RestClient(url) as client:
                states = ", ".join(f"{s.version} {s.state}" for s in client.status())
                served = {}
                for label in labels:
                    try:
                        served[label] = client.metadata(label=label).version
                    except RequestError as error:
                        served[label] = error.code
            print(f"{url}: {states}; labels {served}")


def _canary(rollout: Rollout, args: argparse.Namespace) -> bool:
    from serving.smoke import run as smoke

    reviews = read_reviews(args.reviews)[: max(args.max_reviews, 1)]
    version = rollout.canary(args.version, args.repository)
    if rollout.dry_run:
        return True
    with rollout.fleet.endpoints() as urls:
        for url in urls:
            smoke(url, None, rollout.model_name, 60, DEFAULT_TIMEOUT_SECONDS, label=CANARY)
        print(f"    smoke test of /labels/{CANARY} passed on {len(urls)} server(s)")
        result = compare(urls, reviews)
    limits = Thresholds(**{name: getattr(args, name) for name in Thresholds.__dataclass_fields__})
    checks = result.checks(limits)
    print(
        f"==> Canary version {version} vs {STABLE}: {result.reviews} reference reviews, "
        f"{result.requests} requests to each label"
    )
    for text, ok in checks:
        print(f"    {'ok  ' if ok else 'FAIL'} {text}")
    passed = all(ok for _, ok in checks)
    print(
        "Verdict: PASS - promote with `make promote`"
        if passed
        else "Verdict: FAIL - withdraw with `make rollback-model` (the canary stays up meanwhile)"
    )
    return passed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        if args.verb == "publish":
            _publish(args)
            return EXIT_OK
        if args.verb == "init":
            _init(args)
            return EXIT_OK
        fleet = (
            KubernetesFleet(args.namespace, args.kubectl)
            if args.namespace
            else LocalFleet(args.rest_url)
        )
        rollout = Rollout(args.config, fleet, dry_run=args.dry_run, timeout=args.timeout)
        if args.verb == "status":
            _status(rollout)
        elif args.verb == "canary":
            return EXIT_OK if _canary(rollout, args) else EXIT_FAILED
        elif args.verb == "promote":
            print(f"Promoted: '{STABLE}' is version {rollout.promote()}")
        elif args.verb == "rollback":
            print(f"Rolled back: '{STABLE}' is version {rollout.rollback()}")
    except (RolloutError, RepositoryError, RequestError, LoadTestError, ModelConfigError) as error:
        print(f"rollout: {error}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as error:
        print(f"rollout: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
