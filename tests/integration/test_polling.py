"""When the local server looks at the disk: base-path scans (``--file_system_poll_wait_seconds``,
TF Serving's rule in ``ModelManager._scan_due``) and the ``--model_config_file`` watcher.

A stand-in replaces the SavedModel load, so these run in seconds without a trained model; the
manager tests call ``_tick`` (one step of the manager thread) themselves, so that "never
scanned" is checked after a known number of steps rather than after a sleep.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.model_server import manager as manager_module
from serving.model_server.errors import ServingError
from serving.model_server.manager import LoadSettings, ModelManager, State
from tests.helpers import loopback_server, wait_for

# Manager steps taken before asserting that something never happens.
STEPS = 5


class FakeBundle:
    """Stands in for ``SessionBundle``: a version "loads" without TensorFlow."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def fake_bundles(monkeypatch):
    monkeypatch.setattr(manager_module, "SessionBundle", FakeBundle)


def make_base(root: Path, name: str, versions: tuple[int, ...]) -> Path:
    base = root / name
    for number in versions:
        (base / str(number)).mkdir(parents=True)
    return base


def model_entry(name: str, base: Path, policy: str = "", labels: str = "") -> str:
    return (
        f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
        f"{policy} {labels} }}"
    )


def server_config(*entries: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(
        f"model_config_list {{ {' '.join(entries)} }}", model_server_config_pb2.ModelServerConfig()
    )


def make_manager(poll: float, *entries: str) -> ModelManager:
    return ModelManager(
        server_config(*entries),
        LoadSettings(file_system_poll_wait_seconds=poll, enable_model_warmup=False),
    )


def step(manager: ModelManager, times: int = STEPS) -> None:
    for _ in range(times):
        manager._tick()


def states(manager: ModelManager, name: str) -> dict[int, str]:
    """Version -> state name, or {} when the model has no versions (NOT_FOUND)."""
    try:
        status = manager.status(name)
    except ServingError:
        return {}
    return {entry.version: State.Name(entry.state) for entry in status.model_version_status}


def test_a_positive_poll_scans_a_model_that_a_reload_adds(tmp_path):
    imdb, other = make_base(tmp_path, "imdb", (1,)), make_base(tmp_path, "other", (1,))
    manager = make_manager(60, model_entry("imdb", imdb))
    step(manager, 1)
    assert states(manager, "imdb") == {1: "AVAILABLE"}
    manager.reload_config(server_config(model_entry("imdb", imdb), model_entry("other", other)))
    step(manager, 1)
    assert states(manager, "other") == {1: "AVAILABLE"}


@pytest.mark.parametrize("startup_models", [0, 1], ids=["empty-startup-config", "one-model"])
def test_with_poll_zero_a_model_that_a_reload_adds_is_never_scanned(
    tmp_path, startup_models, caplog
):
    imdb, other = make_base(tmp_path, "imdb", (1,)), make_base(tmp_path, "other", (1,))
    startup = [model_entry("imdb", imdb)][:startup_models]
    manager = make_manager(0, *startup)
    step(manager)
    assert states(manager, "imdb") == ({1: "AVAILABLE"} if startup_models else {})
    # TF Serving polls once, when it starts; a reload does not poll (its reload of a new model
    # then waits for ever). The model stays without versions: NOT_FOUND.
    manager.reload_config(server_config(*startup, model_entry("other", other)))
    step(manager)
    assert states(manager, "other") == {}
    assert "the added model other is never scanned" in caplog.text


def test_with_poll_zero_a_changed_policy_never_applies_but_labels_move(tmp_path, caplog):
    imdb = make_base(tmp_path, "imdb", (1, 2))
    manager = make_manager(0, model_entry("imdb", imdb))  # latest 1
    step(manager)
    assert states(manager, "imdb") == {2: "AVAILABLE"}
    manager.reload_config(
        server_config(
            model_entry(
                "imdb",
                imdb,
                policy="model_version_policy { specific { versions: 1 versions: 2 } }",
                labels='version_labels { key: "stable" value: 2 }',
            )
        )
    )
    step(manager)
    # Version 1 would join at a scan; with 0 there is none after start-up.
    assert states(manager, "imdb") == {2: "AVAILABLE"}
    with manager.lease("imdb", label="stable") as lease:
        assert lease.version.number == 2
    assert "the new version policy or base path of model imdb never applies" in caplog.text


def test_a_negative_poll_never_scans(tmp_path):
    imdb = make_base(tmp_path, "imdb", (1,))
    manager = make_manager(-1, model_entry("imdb", imdb))
    step(manager)
    assert states(manager, "imdb") == {}
    # So start-up waits for ever, as TF Serving's does (here: until the timeout).
    with pytest.raises(TimeoutError):
        manager.wait_until_ready(timeout=0.2)


def test_a_config_edit_made_during_the_initial_load_is_applied_afterwards(tmp_path, monkeypatch):
    loading, release = threading.Event(), threading.Event()

    class SlowBundle(FakeBundle):
        """Blocks the first load until the test has edited the config."""

        def __init__(self, path: Path):
            loading.set()
            if not release.wait(timeout=30):
                raise TimeoutError("the test never released the load")
            super().__init__(path)

    monkeypatch.setattr(manager_module, "SessionBundle", SlowBundle)
    imdb = make_base(tmp_path, "imdb", (1,))
    config = tmp_path / "models.config"
    config.write_text(f"model_config_list {{ {model_entry('imdb', imdb)} }}")
    server = loopback_server(
        model_config_file=str(config),
        model_config_file_poll_wait_seconds=0.1,
        enable_model_warmup=False,
    )
    started = threading.Thread(target=server.start, kwargs={"load_timeout": 30})
    started.start()
    try:
        assert loading.wait(timeout=30), "the load never started"
        labels = 'version_labels { key: "stable" value: 1 }'
        config.write_text(f"model_config_list {{ {model_entry('imdb', imdb, labels=labels)} }}")
        release.set()
        started.join(timeout=30)
        assert not started.is_alive() and server.rest_port is not None

        def stable_names_version_1() -> bool:
            try:
                with server.manager.lease("imdb", label="stable") as lease:
                    return lease.version.number == 1
            except ServingError:
                return False

        wait_for(stable_names_version_1, timeout=10, what="the edit made during the load applied")
    finally:
        release.set()
        started.join(timeout=30)
        server.stop(grace_seconds=1)
