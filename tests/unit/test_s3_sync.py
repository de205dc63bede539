"""The EKS sync sidecar's failure handling, readiness marker and start-up, with a stub repository
in a local folder (tests/integration/test_s3_repository.py runs it against moto's S3)."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from serving import s3_sync
from serving.contract import MODEL_NAME
from serving.repository import MANIFEST_NAME, Manifest, build_manifest, verify_copy
from serving.versions import list_versions
from tests.helpers import PROJECT_ROOT

# Seconds a test lets the sidecar's loop run before it stops it anyway.
LOOP_DEADLINE_SECONDS = 30


class StubRepository:
    """Published versions in a local folder, read as S3Repository reads a bucket. Each download
    first calls ``before_download(count)`` (count from 1), which may raise, as a full disk does."""

    url = "s3://models-test/imdb"

    def __init__(self, export: Path, versions: list[int]):
        self.export = export
        self.manifests = {version: build_manifest(export, version) for version in versions}
        self.downloads = 0
        self.before_download: Callable[[int], None] = lambda count: None

    def published_versions(self) -> list[int]:
        return sorted(self.manifests)

    def manifest(self, version: int) -> Manifest | None:
        return self.manifests.get(version)

    def version_url(self, version: int) -> str:
        return f"{self.url}/{version}"

    def download(self, manifest: Manifest, folder: Path) -> None:
        self.downloads += 1
        self.before_download(self.downloads)
        shutil.copytree(self.export, folder)
        (folder / MANIFEST_NAME).write_text(manifest.to_json())
        verify_copy(folder, manifest)


def disk_full(count: int) -> None:
    if count == 1:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def export(tmp_path) -> Path:
    """A version folder (the sync copies files; it does not load them)."""
    folder = tmp_path / "export"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.index").write_bytes(b"index")
    return folder


@pytest.fixture
def model_config(tmp_path) -> Path:
    """A models.config that names version 1, as the repository component's does."""
    path = tmp_path / "models.config"
    path.write_text(
        "model_config_list {\n  config {\n"
        f'    name: "{MODEL_NAME}"\n    base_path: "/models/{MODEL_NAME}"\n'
        '    model_platform: "tensorflow"\n'
        "    model_version_policy { specific { versions: 1 } }\n"
        "  }\n}\n"
    )
    return path


@pytest.fixture
def sidecar(monkeypatch, export, caplog):
    """main() of the sidecar with the stub repository in place of S3; restores the signal
    handlers that main() installs."""
    repository = StubRepository(export, [1])
    monkeypatch.setattr(s3_sync, "S3Repository", lambda url, endpoint_url=None: repository)
    caplog.set_level(logging.INFO, logger=s3_sync.logger.name)
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    yield repository
    for number, handler in handlers.items():
        signal.signal(number, handler)


def run_sidecar(argv: list[str], until: Callable[[], bool]) -> int:
    """Runs the sidecar's loop, ``main(argv)``, in this thread and sends it SIGTERM, as the
    kubelet stops it, once ``until()`` holds (or after LOOP_DEADLINE_SECONDS)."""
    original = signal.getsignal(signal.SIGTERM)
    done = threading.Event()

    def stop_when_done() -> None:
        deadline = time.monotonic() + LOOP_DEADLINE_SECONDS
        while not done.is_set() and time.monotonic() < deadline:
            if signal.getsignal(signal.SIGTERM) is not original and until():
                break
            time.sleep(0.05)
        # Only to main()'s own handler: the original one would end pytest.
        if not done.is_set() and signal.getsignal(signal.SIGTERM) is not original:
            os.kill(os.getpid(), signal.SIGTERM)

    stopper = threading.Thread(target=stop_when_done, daemon=True)
    stopper.start()
    try:
        return s3_sync.main(argv)
    finally:
        done.set()
        stopper.join(timeout=LOOP_DEADLINE_SECONDS)


def arguments(model_config: Path, target: Path, *extra: str) -> list[str]:
    return [
        "--repository", StubRepository.url, "--model-config", str(model_config),
        "--target", str(target), "--interval", "0.1", *extra,
    ]  # fmt: skip


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_disk_error_while_fetching_fails_the_pass_with_one_line_and_the_next_pass_retries(
    export, model_config, tmp_path, caplog
):
    repository = StubRepository(export, [1])
    repository.before_download = disk_full
    target = tmp_path / "models" / MODEL_NAME
    syncer = s3_sync.Syncer(repository, model_config, target)
    caplog.set_level(logging.INFO, logger=s3_sync.logger.name)

    assert syncer.sync_once() is False
    (line,) = errors(caplog)
    assert "version 1" in line and "No space left on device" in line
    assert list_versions(target) == []
    assert not [child for child in target.iterdir() if child.name.startswith(".")]

    assert syncer.sync_once() is True
    assert list_versions(target) == [1]
    assert len(errors(caplog)) == 1


def test_the_loop_survives_a_failed_pass_and_syncs_on_the_next_one(
    sidecar, model_config, tmp_path, caplog
):
    """A pass that fails on the disk (here: the target's parent is a file, so it cannot be
    created) is one line; the sidecar keeps running and the next pass completes."""
    blocked = tmp_path / "models"
    blocked.write_text("not a folder")
    target = blocked / MODEL_NAME
    ready = tmp_path / "first-sync-done"

    def unblock_then_wait_for_ready() -> bool:
        if errors(caplog) and blocked.is_file():
            blocked.unlink()
        return ready.exists()

    argv = arguments(model_config, target, "--ready-file", str(ready))
    assert run_sidecar(argv, until=unblock_then_wait_for_ready) == 0
    (line,) = errors(caplog)
    assert "Sync pass failed" in line and str(blocked) in line
    assert ready.exists() and list_versions(target) == [1]


def test_a_restarted_sidecar_is_not_ready_before_its_first_sync(sidecar, model_config, tmp_path):
    """The ready file on the (surviving) volume is the previous container's: it goes at start,
    so the startupProbe waits for this container's first complete sync."""
    ready = tmp_path / "first-sync-done"
    ready.touch()  # left by the container that ran before the restart
    ready_during_first_sync: list[bool] = []
    sidecar.before_download = lambda count: ready_during_first_sync.append(ready.exists())

    argv = arguments(model_config, tmp_path / "models" / MODEL_NAME, "--ready-file", str(ready))
    assert run_sidecar(argv, until=lambda: bool(ready_during_first_sync) and ready.exists()) == 0
    assert ready_during_first_sync == [False]
    assert ready.exists()


def test_a_ready_file_that_cannot_be_reset_is_fatal_at_start(
    sidecar, model_config, tmp_path, capsys
):
    ready = tmp_path / "first-sync-done"
    ready.mkdir()  # cannot be removed as a file: readiness could not be trusted
    argv = arguments(model_config, tmp_path / "models" / MODEL_NAME, "--ready-file", str(ready))
    assert run_sidecar(argv, until=lambda: False) == 2
    message = capsys.readouterr().err
    assert str(ready) in message and "--ready-file" in message
    assert sidecar.downloads == 0


def test_a_malformed_endpoint_is_fatal_at_start_with_one_line(model_config, tmp_path, capsys):
    code = s3_sync.main(
        arguments(model_config, tmp_path / "target", "--once", "--s3-endpoint-url", "not a url")
    )
    assert code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "Invalid endpoint: not a url" in line


def test_the_image_runs_the_sidecar_from_any_working_directory(tmp_path):
    """Lays out the modules as docker/sync.Dockerfile COPYs them, with the environment its ENV
    sets (the image's root mapped to a temporary folder), and runs ``python -m serving.s3_sync``
    from another folder, as a Pod with its own workingDir would."""
    dockerfile = (PROJECT_ROOT / "docker" / "sync.Dockerfile").read_text().replace("\\\n", "")
    image_root = tmp_path / "image"
    copied = re.search(r"^COPY (serving/.*) (/\S+/)serving/$", dockerfile, re.MULTILINE)
    assert copied, "docker/sync.Dockerfile no longer COPYs the serving modules"
    app = image_root / copied.group(2).strip("/")
    (app / "serving").mkdir(parents=True)
    for name in copied.group(1).split():
        shutil.copy(PROJECT_ROOT / name, app / name)
    image_env = dict(
        pair.split("=", 1)
        for line in re.findall(r"^ENV (.*)$", dockerfile, re.MULTILINE)
        for pair in line.split()
    )
    environment = {"PATH": os.environ["PATH"]}
    if "PYTHONPATH" in image_env:
        environment["PYTHONPATH"] = os.pathsep.join(
            str(image_root / entry.strip("/")) for entry in image_env["PYTHONPATH"].split(":")
        )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "serving.s3_sync", "--help"],
        cwd=elsewhere,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m serving.s3_sync" in result.stdout
