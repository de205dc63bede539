"""The steps that move labels: canary, promote, rollback, each an edit of one model's state in
``models.config`` followed by a wait until every server agrees (``Rollout``).

The canary comparison and the command line are in ``comparison.py`` and ``cli.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2

from serving.client import RequestError, RestClient
from serving.contract import MODEL_NAME, REQUEST_TIMEOUT_SECONDS
from serving.model_config import model_entry
from serving.repository import FolderRepository, open_repository
from serving.rollout import RolloutError
from serving.rollout.fleet import KubernetesFleet, LocalFleet
from serving.rollout.state import (
    CANARY,
    PREVIOUS,
    STABLE,
    config_text,
    read_state,
    with_state,
    write_config,
)


@dataclass
class Rollout:
    """The steps on one model (``model_name``) of the ``models.config`` at ``config_path``.

    ``dry_run`` prints each edit (and the kubectl commands) instead of making it; ``timeout``
    bounds each wait for the servers, in seconds.
    """

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

    def _with_state(
        self,
        config: model_server_config_pb2.ModelServerConfig,
        versions: Sequence[int],
        labels: dict[str, int],
    ) -> model_server_config_pb2.ModelServerConfig:
        """``with_state`` on this rollout's model: no step can edit another."""
        return with_state(config, versions, labels, self.model_name)

    def state(self) -> tuple[model_server_config_pb2.ModelServerConfig, list[int], dict[str, int]]:
        """The config, and this model's versions and labels (``state.read_state``)."""
        return read_state(self.config_path, self.model_name)

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
        staged = self._with_state(config, [*kept, version], kept_labels)
        labelled = self._with_state(config, [*kept, version], {**kept_labels, CANARY: version})
        self._apply(staged, f"Loading version {version} beside {STABLE} version {stable}")
        if self.dry_run:
            self._apply(labelled, f"Pointing '{CANARY}' at version {version}")
            return version
        with self.fleet.endpoints() as urls:
            try:
                self._wait(
                    urls,
                    lambda client: _available_problem(client, version),
                    f"version {version} is AVAILABLE on every server",
                )
            except RolloutError as error:
                self._apply(config, f"Restoring the previous models.config ({STABLE} unchanged)")
                raise RolloutError(
                    f"canary aborted, {STABLE} version {stable} keeps serving: {error}"
                ) from error
            print(f"    version {version} is AVAILABLE on every server")
            self._apply(labelled, f"Pointing '{CANARY}' at version {version}")
            self._wait_label(urls, CANARY, version)
        return version

    def promote(self) -> int:
        """Moves ``stable`` to the canary's version; returns it."""
        config, _, labels = self.state()
        if CANARY not in labels or labels[CANARY] == labels[STABLE]:
            raise RolloutError(f"no '{CANARY}' to promote: run make canary first")
        stable, canary = labels[STABLE], labels[CANARY]
        new = self._with_state(config, [stable, canary], {STABLE: canary, PREVIOUS: stable})
        self._apply(new, f"'{STABLE}' -> version {canary}; version {stable} kept as '{PREVIOUS}'")
        if not self.dry_run:
            with self.fleet.endpoints() as urls:
                self._wait_label(urls, STABLE, canary)
        return canary

    def rollback(self) -> int:
        """Withdraws the canary, or moves ``stable`` back to ``previous``; returns ``stable``."""
        config, _, labels = self.state()
        stable = labels[STABLE]
        if CANARY in labels and labels[CANARY] != stable:
            canary = labels[CANARY]
            kept = {k: v for k, v in labels.items() if k in (STABLE, PREVIOUS)}
            new = self._with_state(config, list(kept.values()), kept)
            self._apply(
                new, f"Withdrawing the canary (version {canary}); '{STABLE}' stays {stable}"
            )
            label, expected, result = CANARY, None, stable
        elif PREVIOUS in labels:
            previous = labels[PREVIOUS]
            new = self._with_state(config, [previous], {STABLE: previous})
            self._apply(new, f"'{STABLE}' -> version {previous} (back from {stable})")
            label, expected, result = STABLE, previous, previous
        else:
            raise RolloutError(f"nothing to roll back: no '{CANARY}' and no '{PREVIOUS}' label")
        if not self.dry_run:
            with self.fleet.endpoints() as urls:
                self._wait_label(urls, label, expected)
        return result

    def _wait(
        self, urls: Sequence[str], problem: Callable[[RestClient], str | None], what: str
    ) -> None:
        wait_for_all(urls, problem, what, self.timeout, self.model_name)

    def _wait_label(self, urls: Sequence[str], label: str, version: int | None) -> None:
        what = (
            f"'{label}' points at version {version} on every server"
            if version is not None
            else f"'{label}' is gone on every server"
        )
        self._wait(urls, lambda client: _label_problem(client, label, version), what)
        print(f"    {what}")


def wait_for_all(
    urls: Sequence[str],
    problem: Callable[[RestClient], str | None],
    what: str,
    timeout: float,
    model_name: str = MODEL_NAME,
) -> None:
    """Polls every server about ``model_name`` until ``problem`` returns None for each.

    ``problem`` returns what still keeps a server from the goal, or raises RolloutError when it
    never will (a version that failed to load).

    Raises:
        RolloutError: a server can never get there, or the timeout passed (naming each server
            still pending and its last problem).
    """
    deadline = time.monotonic() + timeout
    clients = {url: RestClient(url, model_name, timeout=REQUEST_TIMEOUT_SECONDS) for url in urls}
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
