"""The rollout's pure parts: models.config edits, the canary verdict, the folder repository."""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import os
import signal
import sys
import threading
import time

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.contract import K8S_NAMESPACE
from serving.loadtest import percentile
from serving.model_config import model_entry
from serving.model_config import read_model_server_config as read_config
from serving.repository import (
    MANIFEST_NAME,
    FolderRepository,
    Manifest,
    RepositoryError,
    build_manifest,
    verify_copy,
)
from serving.rollout.cli import main as rollout_main
from serving.rollout.comparison import Comparison, Thresholds
from serving.rollout.fleet import KubernetesFleet, LocalFleet
from serving.rollout.state import initial_config, labels_of, with_state, write_config
from serving.rollout.verbs import Rollout
from serving.s3_sync import wanted_versions
from tests.helpers import PROJECT_ROOT


def test_with_state_sets_exactly_the_versions_and_known_labels(tmp_path):
    config = initial_config("gs://bucket/imdb", 3)
    new = with_state(config, [4, 3, 4], {"stable": 3, "canary": 4})
    model = model_entry(new)
    assert list(model.model_version_policy.specific.versions) == [3, 4]
    assert labels_of(model) == {"stable": 3, "canary": 4}
    assert model.base_path == "gs://bucket/imdb" and model.model_platform == "tensorflow"
    assert labels_of(model_entry(config)) == {"stable": 3}  # the original is untouched
    path = tmp_path / "models.config"
    write_config(path, new)
    assert read_config(path) == new
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]  # no temp file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_the_sync_wants_what_the_policy_and_labels_name():
    config = model_entry(with_state(initial_config("/models/imdb", 1), [1, 2], {"stable": 1}))
    assert wanted_versions(config, published=[1, 2, 3]) == {1, 2}
    latest = model_entry(initial_config("/models/imdb", 1))
    latest.model_version_policy.latest.num_versions = 2
    assert wanted_versions(latest, published=[1, 2, 3]) == {1, 2, 3}  # 2 latest + stable's 1
    latest.model_version_policy.all.SetInParent()
    assert wanted_versions(latest, published=[1, 5]) == {1, 5}


def comparison(**changes) -> Comparison:
    values = dict(
        reviews=100,
        requests=300,
        agreement=0.99,
        mean_shift=0.01,
        max_shift=0.2,
        p99_ms={"stable": 10.0, "canary": 12.0},
        errors={"stable": 0, "canary": 0},
        server_requests=(0, 200),
    )
    return Comparison(**(values | changes))


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({}, []),
        ({"agreement": 0.85}, ["label agreement"]),
        ({"mean_shift": 0.2}, ["mean probability shift"]),
        ({"p99_ms": {"stable": 10.0, "canary": 16.0}}, ["p99 latency"]),
        # 5 ms of slack: a fast model's p99 may double without failing on noise.
        ({"p99_ms": {"stable": 1.0, "canary": 5.9}}, []),
        ({"errors": {"stable": 0, "canary": 1}}, ["canary errors"]),
        ({"server_requests": (1, 200)}, []),  # 0.5 %: someone's bad request, within 1 %
        ({"server_requests": (3, 200)}, ["servers' metrics"]),
        ({"server_requests": None}, []),
    ],
)
def test_the_verdict_names_each_failed_check(changes, failing):
    checks = comparison(**changes).checks(Thresholds())
    assert [text.split(" ")[0:2] for text, ok in checks if not ok] == [
        name.split(" ")[0:2] for name in failing
    ]


def test_percentile_is_the_nearest_rank():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 0.99) == 99.0
    assert percentile([], 0.99) != percentile([], 0.99)  # NaN


def make_version(folder, size=1000):
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.data").write_bytes(os.urandom(size))
    return folder


def test_folder_publish_is_atomic_immutable_and_verifiable(tmp_path):
    source = make_version(tmp_path / "export")
    repository = FolderRepository(tmp_path / "repository")
    manifest = repository.publish(source, 7)
    assert repository.published_versions() == [7]
    assert repository.manifest(7) == manifest
    assert [p.name for p in repository.path.iterdir()] == ["7"]  # no staging left behind
    verify_copy(repository.path / "7", manifest)
    with pytest.raises(RepositoryError, match="already published"):
        repository.publish(source, 7)
    # A folder that publish did not make is not a published version, and is not overwritten.
    make_version(repository.path / "8")
    assert repository.published_versions() == [7]
    with pytest.raises(RepositoryError, match="not published"):
        repository.publish(source, 8)


def test_verify_copy_names_the_first_bad_file(tmp_path):
    folder = make_version(tmp_path / "1")
    manifest = build_manifest(folder, 1)
    data = folder / "variables" / "variables.data"
    data.write_bytes(data.read_bytes()[:-1])
    with pytest.raises(RepositoryError, match=r"variables/variables\.data has 999 bytes"):
        verify_copy(folder, manifest)
    data.write_bytes(b"x" * 1000)
    with pytest.raises(RepositoryError, match="does not match its SHA-256"):
        verify_copy(folder, manifest)
    data.unlink()
    with pytest.raises(RepositoryError, match="is missing"):
        verify_copy(folder, manifest)


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a//b"])
def test_a_manifest_cannot_point_outside_its_version(path):
    text = json.dumps({"version": 1, "files": [{"path": path, "size": 1, "sha256": "0"}]})
    with pytest.raises(RepositoryError, match="unsafe path"):
        Manifest.from_json(text, "s3://bucket/imdb/1/" + MANIFEST_NAME)
    with pytest.raises(RepositoryError, match="not a valid"):
        Manifest.from_json("{", "x")


# ------------------------------------------------------------------------------------------------
# Hardening: a models.config with two models, a stuck port-forward, usage errors


def two_model_config(repository) -> model_server_config_pb2.ModelServerConfig:
    """imdb and ``other``, both at version 1 of ``repository``, each with a ``shadow`` label
    that the rollout does not own."""
    config = initial_config(str(repository), 1)
    other = config.model_config_list.config.add(
        name="other", base_path=str(repository), model_platform="tensorflow"
    )
    other.model_version_policy.specific.versions.append(1)
    other.version_labels["stable"] = 1
    for model in config.model_config_list.config:
        model.version_labels["shadow"] = 1
    return config


def publish_by_hand(repository, *versions) -> None:
    """Published versions as the rollout sees them (their manifest), without files."""
    for number in versions:
        (repository / str(number)).mkdir(parents=True)
        (repository / str(number) / "PUBLISHED.json").write_text(
            json.dumps({"format": 1, "version": number, "files": []})
        )


def printed_configs(output: str) -> list[model_server_config_pb2.ModelServerConfig]:
    """Every ``models.config would become`` block of a dry run's output, parsed."""
    configs = []
    for block in output.split("models.config would become")[1:]:
        lines = block.splitlines()[1:]
        indented = itertools.takewhile(lambda line: line.startswith("    "), lines)
        text = "\n".join(line[4:] for line in indented)
        configs.append(text_format.Parse(text, model_server_config_pb2.ModelServerConfig()))
    return configs


def test_with_state_keeps_the_labels_it_does_not_own_and_their_versions():
    config = initial_config("/models/imdb", 3)
    model_entry(config).version_labels["shadow"] = 2
    new = model_entry(with_state(config, [4], {"stable": 4}))
    assert labels_of(new) == {"stable": 4, "shadow": 2}
    # TF Serving refuses a label on a version it does not load: shadow's version stays.
    assert list(new.model_version_policy.specific.versions) == [2, 4]


@pytest.mark.parametrize("model_name", ["imdb", "other"])
def test_every_verb_edits_only_its_model_and_keeps_its_other_labels(tmp_path, capsys, model_name):
    """canary, rollback, canary, promote, rollback on one model of two: each step dry-run first
    (the file unchanged, the printed config what the real step then writes), then for real (no
    servers to wait for)."""
    repository = tmp_path / "repository"
    publish_by_hand(repository, 1, 2)
    path = tmp_path / "models.config"
    write_config(path, two_model_config(repository))
    untouched = "other" if model_name == "imdb" else "imdb"
    before = model_entry(read_config(path), untouched)

    def step(verb, labels: dict[str, int], versions: list[int]) -> None:
        text = path.read_text()
        for dry_run in (True, False):
            rollout = Rollout(path, LocalFleet([]), dry_run=dry_run, model_name=model_name)
            verb(rollout)
            if dry_run:
                assert path.read_text() == text
                printed = printed_configs(capsys.readouterr().out)[-1]
        config = read_config(path)
        assert printed == config
        assert model_entry(config, untouched) == before
        rolled = model_entry(config, model_name)
        assert labels_of(rolled) == {**labels, "shadow": 1}
        assert list(rolled.model_version_policy.specific.versions) == versions

    step(lambda r: r.canary(2, str(repository)), {"stable": 1, "canary": 2}, [1, 2])
    step(lambda r: r.rollback(), {"stable": 1}, [1])
    step(lambda r: r.canary(None, None), {"stable": 1, "canary": 2}, [1, 2])
    step(lambda r: r.promote(), {"stable": 2, "previous": 1}, [1, 2])
    step(lambda r: r.rollback(), {"stable": 1}, [1])


STUCK_KUBECTL = """#!{python}
# kubectl with two pods whose port-forward never exits by itself and ignores SIGTERM (a stuck
# call); only the pods named in FAKE_FORWARDING say where they listen.
import os, signal, sys, time
args = sys.argv[1:]
if "get" in args:
    print("pod/pod0\\npod/pod1")
elif "port-forward" in args:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with open(os.environ["FAKE_PIDS"], "a") as pids:
        pids.write(f"{{os.getpid()}}\\n")
    if args[args.index("port-forward") + 1] in os.environ["FAKE_FORWARDING"].split():
        print("Forwarding from 127.0.0.1:18765 -> 8501", flush=True)
        print("Forwarding from [::1]:18765 -> 8501", flush=True)
    time.sleep(3600)
"""


@pytest.fixture
def stuck_kubectl(tmp_path, monkeypatch):
    """The fake kubectl's path; afterwards, what it started is killed if the test left it."""
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(STUCK_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    yield kubectl, pids
    for pid in forward_pids(pids):
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def forward_pids(pids_file) -> list[int]:
    return [int(line) for line in pids_file.read_text().split()] if pids_file.exists() else []


def is_gone(pid: int) -> bool:
    """True once the process has exited and been reaped (a zombie still has its pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_stuck_port_forward_fails_within_the_timeout_and_leaves_no_process(
    tmp_path, stuck_kubectl, monkeypatch, capsys
):
    kubectl, pids = stuck_kubectl
    monkeypatch.setenv("FAKE_FORWARDING", "pod/pod0")
    path = tmp_path / "models.config"
    write_config(path, initial_config(str(tmp_path), 1))
    argv = ["status", "--config", str(path), "--namespace", K8S_NAMESPACE,
            "--kubectl", str(kubectl), "--timeout", "1"]  # fmt: skip
    result: list[int] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: result.append(rollout_main(argv)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the rollout still waits for kubectl port-forward after 30 s"
    assert time.monotonic() - started < 15  # the 1 s timeout, the stop grace and start-ups
    assert result == [1]
    error = capsys.readouterr().err
    assert "pod/pod1" in error and "Forwarding from" in error and "1 s" in error
    assert len(forward_pids(pids)) == 2  # pod0's forward had started, and is stopped too
    assert all(is_gone(pid) for pid in forward_pids(pids))


def test_port_forwards_are_stopped_and_reaped_after_use(stuck_kubectl, monkeypatch):
    kubectl, pids = stuck_kubectl
    monkeypatch.setenv("FAKE_FORWARDING", "pod/pod0 pod/pod1")
    fleet = KubernetesFleet(K8S_NAMESPACE, str(kubectl))
    with fleet.endpoints() as urls:
        assert urls == ["http://127.0.0.1:18765", "http://127.0.0.1:18765"]
    assert len(forward_pids(pids)) == 2
    assert all(is_gone(pid) for pid in forward_pids(pids))


def test_a_bad_rest_url_is_a_usage_error_before_any_change(tmp_path, capsys):
    repository = tmp_path / "repository"
    publish_by_hand(repository, 1, 2)
    path = tmp_path / "models.config"
    write_config(path, initial_config(str(repository), 1))
    before = path.read_text()
    assert rollout_main(["canary", "--config", str(path), "--rest-url", "localhost:8501"]) == 2
    assert path.read_text() == before  # refused before the first step
    assert "--rest-url" in capsys.readouterr().err


def test_a_value_error_from_a_bug_is_not_reported_as_bad_usage(tmp_path, monkeypatch):
    path = tmp_path / "models.config"
    write_config(path, initial_config(str(tmp_path), 1))

    def broken(self):
        raise ValueError("a bug, not the user's mistake")

    monkeypatch.setattr(Rollout, "promote", broken)
    with pytest.raises(ValueError, match="a bug, not the user's mistake"):
        rollout_main(["promote", "--config", str(path), "--rest-url", "http://127.0.0.1:9"])


def test_serving_imports_nothing_from_training():
    """Training may import serving's contract and checks; serving never imports training."""
    offenders = []
    for path in sorted((PROJECT_ROOT / "serving").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(name.split(".")[0] == "training" for name in names):
                offenders.append(f"{path.relative_to(PROJECT_ROOT)}:{node.lineno}")
    assert offenders == []
