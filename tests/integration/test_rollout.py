"""Publish -> canary -> promote -> rollback end to end: two local servers ("pods") read a folder
model repository and poll the models.config that ``python -m serving rollout`` edits, under a
light background load that must see zero failed requests."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

import pytest
from google.protobuf import text_format

from serving.client import GrpcClient, RequestError, RestClient
from serving.contract import K8S_NAMESPACE, MODEL_NAME, MODELS_CONFIGMAP, REST_PORT
from serving.model_config import read_model_server_config as read_config
from serving.model_server.server import ModelServer
from serving.rollout.cli import main as rollout
from serving.rollout.fleet import KUSTOMIZE_LABELS
from tests.helpers import PROJECT_ROOT, loopback_server, wait_for

# The labels the rollout moves.
LABELS = ("stable", "canary", "previous")
REVIEW = "A wonderful, brilliant film. I loved every minute of it."
# One export, tiny and fast to load: the flow is the same for both model families.
pytestmark = pytest.mark.parametrize("trained_model", ["mlp"], indirect=True)


class BackgroundLoad:
    """Clients calling ``/labels/stable`` (REST and gRPC) and the unlabelled route, in a loop."""

    def __init__(self, servers: list[ModelServer]):
        self.servers = servers
        self.stop = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.threads = [
            threading.Thread(target=self._run, args=(server, transport), daemon=True)
            for server in servers
            for transport in ("rest", "grpc")
        ]

    def _run(self, server: ModelServer, transport: str) -> None:
        client = (
            RestClient(f"http://127.0.0.1:{server.rest_port}")
            if transport == "rest"
            else GrpcClient(f"127.0.0.1:{server.grpc_port}")
        )
        with client:
            while not self.stop.is_set():
                for label in ("stable", None):
                    try:
                        client.predict([REVIEW], label=label)
                        self.requests += 1
                    except RequestError as error:
                        self.failures.append(f"{transport} label={label}: {error}")
                self.stop.wait(0.02)

    def __enter__(self) -> BackgroundLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def labels_served(
    server: ModelServer, model_name: str = MODEL_NAME, labels: tuple[str, ...] = LABELS
) -> dict[str, int | str]:
    """The version each label resolves to on the server, or the error code."""
    served: dict[str, int | str] = {}
    with RestClient(f"http://127.0.0.1:{server.rest_port}", model_name) as client:
        for label in labels:
            try:
                served[label] = client.metadata(label=label).version
            except RequestError as error:
                served[label] = error.code
    return served


def config_labels(path: Path) -> dict[str, int]:
    return dict(read_config(path).model_config_list.config[0].version_labels)


@pytest.fixture
def fleet(tmp_path, exported_version):
    """A folder repository with version 1 published, a models.config (stable = 1) and two
    servers polling it; yields (repository, config path, servers, rollout CLI arguments)."""
    repository = tmp_path / "repository"
    config = tmp_path / "models.config"
    assert (
        rollout(
            [
                "publish",
                "--repository",
                str(repository),
                "--version-dir",
                str(exported_version),
                "--version",
                "1",
            ]
        )
        == 0
    )
    assert rollout(["init", "--config", str(config), "--repository", str(repository)]) == 0
    servers = []
    for _ in range(2):
        server = loopback_server(
            model_config_file=str(config),
            model_config_file_poll_wait_seconds=0.2,
            file_system_poll_wait_seconds=0.2,
            max_num_load_retries=0,
            monitoring_config_file=str(PROJECT_ROOT / "k8s/base/config/monitoring.config"),
        )
        server.start(load_timeout=120)
        servers.append(server)
    # The servers share 2 cores with the background load and the test itself: latency is noise
    # here, so the flow tests do not judge it (tests/unit/test_rollout.py tests that verdict).
    targets = ["--config", str(config), "--timeout", "60"]
    relaxed = ["--max-p99-slack-ms", "10000"]
    for server in servers:
        targets += ["--rest-url", f"http://127.0.0.1:{server.rest_port}"]
    yield repository, config, servers, targets, relaxed
    for server in servers:
        server.stop(grace_seconds=2)


def test_publish_canary_promote_rollback_under_load(fleet, exported_version, capsys):
    repository, config, servers, targets, relaxed = fleet
    with BackgroundLoad(servers) as load:
        assert rollout(["publish", "--repository", str(repository),
                        "--version-dir", str(exported_version), "--version", "2"]) == 0  # fmt: skip
        assert rollout(["canary", *targets, *relaxed]) == 0
        output = capsys.readouterr().out
        assert "Verdict: PASS" in output and "label agreement 100.0%" in output
        assert "servers' metrics during the comparison: 0 non-OK of" in output
        # A second canary while one runs is refused.
        assert rollout(["canary", *targets, "--version", "2"]) == 1
        assert "version 2 is already the 'canary'" in capsys.readouterr().err
        assert config_labels(config) == {"stable": 1, "canary": 2}
        for server in servers:
            assert labels_served(server) == {
                "stable": 1,
                "canary": 2,
                "previous": "INVALID_ARGUMENT",
            }

        assert rollout(["promote", *targets]) == 0
        assert config_labels(config) == {"stable": 2, "previous": 1}
        assert rollout(["status", *targets]) == 0
        status = capsys.readouterr().out
        assert "models.config: versions [1, 2], labels {'previous': 1, 'stable': 2}" in status
        assert status.count("labels {'previous': 1, 'stable': 2}") == 3  # the file + 2 servers
        for server in servers:
            assert labels_served(server) == {
                "stable": 2,
                "canary": "INVALID_ARGUMENT",
                "previous": 1,
            }

        assert rollout(["rollback", *targets]) == 0
        assert config_labels(config) == {"stable": 1}
        for server in servers:
            assert labels_served(server)["stable"] == 1
        assert "Rolled back: 'stable' is version 1" in capsys.readouterr().out

        # A second canary, withdrawn before promotion: stable never moves.
        assert rollout(["canary", *targets, *relaxed, "--version", "2"]) == 0
        assert rollout(["rollback", *targets]) == 0
        assert config_labels(config) == {"stable": 1}
        for server in servers:
            assert labels_served(server) == {
                "stable": 1, "canary": "INVALID_ARGUMENT", "previous": "INVALID_ARGUMENT",
            }  # fmt: skip
    assert load.failures == []
    assert load.requests > 100


def test_a_version_that_fails_to_load_is_taken_out_and_stable_keeps_serving(fleet, capsys):
    repository, config, servers, targets, _ = fleet
    broken = repository / "3"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a protobuf")
    (broken / "PUBLISHED.json").write_text(
        '{"format": 1, "version": 3, "files": [{"path": "saved_model.pb", "size": 22, '
        '"sha256": "unused"}]}'
    )
    before = config.read_text()
    with BackgroundLoad(servers) as load:
        assert rollout(["canary", *targets, "--version", "3"]) == 1
    error = capsys.readouterr().err
    assert "canary aborted, stable version 1 keeps serving" in error
    assert "version 3 failed to load" in error
    assert config.read_text() == before
    assert load.failures == []
    for server in servers:
        assert labels_served(server)["stable"] == 1


def test_bad_requests_are_refused_with_a_reason_and_change_nothing(fleet, tmp_path, capsys):
    repository, config, _, targets, _ = fleet
    before = config.read_text()
    not_a_model = tmp_path / "export" / "5"
    not_a_model.mkdir(parents=True)
    (not_a_model / "saved_model.pb").write_bytes(b"this is not a protobuf")
    cases = [
        (
            ["publish", "--repository", str(repository), "--version-dir", str(not_a_model)],
            "refusing to publish: " + str(not_a_model) + ": TF Serving could not load it",
        ),
        (["canary", *targets, "--version", "7"], "version 7 is not published"),
        (["canary", *targets, "--version", "1"], "version 1 is already 'stable'"),
        (["promote", *targets], "no 'canary' to promote"),
        (["rollback", *targets], "nothing to roll back"),
        (
            ["publish", "--repository", str(repository), "--version-dir", str(tmp_path)],
            "is not a version folder",
        ),
        (
            ["publish", "--repository", str(repository), "--version-dir", str(repository / "1")],
            "version 1 is already published",
        ),
    ]
    for argv, reason in cases:
        assert rollout(argv) == 1, argv
        assert reason in capsys.readouterr().err
    assert config.read_text() == before

    config.write_text("model_config_list { config { name: 'imdb' oops } }")
    assert rollout(["promote", *targets]) == 1
    assert "models.config" in capsys.readouterr().err


FAKE_KUBECTL = """#!{python}
# kubectl as the rollout uses it, against local servers: `apply` writes the ConfigMap's
# models.config where the servers read it (as the kubelet updates a mounted ConfigMap),
# `get pods` lists them, `port-forward` names each server's own REST port.
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
pods = dict(item.split("=") for item in os.environ["FAKE_PODS"].split())
if "apply" in args:
    document = json.load(sys.stdin)
    with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
        log.write(json.dumps(document["metadata"], sort_keys=True) + "\\n")
    target = os.environ["FAKE_MOUNTED_CONFIG"]
    with open(target + ".new", "w") as stream:
        stream.write(document["data"]["models.config"])
    os.replace(target + ".new", target)
elif "get" in args:
    print("\\n".join("pod/" + name for name in pods))
elif "port-forward" in args:
    name = args[args.index("port-forward") + 1].removeprefix("pod/")
    print(f"Forwarding from 127.0.0.1:{{pods[name]}} -> 8501", flush=True)
    time.sleep(3600)
"""


def test_the_same_steps_through_kubectl(fleet, tmp_path, exported_version, monkeypatch):
    """--namespace: the rollout edits the overlay's file, applies it as the ConfigMap and reaches
    each pod through its own port-forward (kubectl faked over the local servers)."""
    repository, mounted, servers, _, relaxed = fleet
    overlay_file = tmp_path / "overlay-models.config"
    overlay_file.write_text(mounted.read_text())
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    log = tmp_path / "kubectl.log"
    monkeypatch.setenv("FAKE_KUBECTL_LOG", str(log))
    monkeypatch.setenv("FAKE_MOUNTED_CONFIG", str(mounted))
    monkeypatch.setenv(
        "FAKE_PODS", " ".join(f"pod{i}={s.rest_port}" for i, s in enumerate(servers))
    )
    cluster = ["--config", str(overlay_file), "--namespace", K8S_NAMESPACE, "--kubectl",
               str(kubectl), "--timeout", "60"]  # fmt: skip
    assert rollout(["publish", "--repository", str(repository),
                    "--version-dir", str(exported_version), "--version", "2"]) == 0  # fmt: skip
    with BackgroundLoad(servers) as load:
        assert rollout(["canary", *cluster, *relaxed]) == 0
        assert rollout(["promote", *cluster]) == 0
        for server in servers:
            assert labels_served(server) == {
                "stable": 2,
                "canary": "INVALID_ARGUMENT",
                "previous": 1,
            }
    assert load.failures == []
    assert config_labels(overlay_file) == config_labels(mounted) == {"stable": 2, "previous": 1}
    calls = log.read_text().splitlines()
    assert f"-n {K8S_NAMESPACE} apply -f -" in calls
    forward = f"-n {K8S_NAMESPACE} port-forward pod/pod1 :{REST_PORT}"
    assert any(call.startswith(forward) for call in calls)
    applied = [json.loads(call) for call in calls if call.startswith("{")]
    config_map = {"labels": KUSTOMIZE_LABELS, "name": MODELS_CONFIGMAP, "namespace": K8S_NAMESPACE}
    assert applied and all(metadata == config_map for metadata in applied)


def test_the_gcs_backend_writes_through_tf_gfile(tmp_path, exported_version):
    """GcsRepository on a local path: the same tf.io.gfile calls that write gs:// (no GCS
    emulator here); the manifest comes last and the copy verifies."""
    from serving.repository import GcsRepository, RepositoryError, verify_copy

    repository = GcsRepository(str(tmp_path / "bucket" / "imdb"))
    assert repository.published_versions() == []
    manifest = repository.publish(exported_version, 4)
    assert repository.published_versions() == [4]
    assert repository.manifest(4) == manifest
    verify_copy(tmp_path / "bucket" / "imdb" / "4", manifest)
    with pytest.raises(RepositoryError, match="already published"):
        repository.publish(exported_version, 4)


def states(server: ModelServer, model_name: str) -> list[str]:
    """The states of the model's versions on the server; none while it does not know it."""
    with RestClient(f"http://127.0.0.1:{server.rest_port}", model_name) as client:
        try:
            return [status.state for status in client.status()]
        except RequestError:
            return []


def model_of(path: Path, name: str):
    return next(m for m in read_config(path).model_config_list.config if m.name == name)


WITH_SHADOW = (*LABELS, "shadow")


@pytest.mark.parametrize("rolled", ["imdb", "other"])
def test_two_models_each_verb_moves_only_its_model_and_keeps_its_other_labels(
    fleet, exported_version, capsys, rolled
):
    """A models.config serving imdb and ``other`` (both from the repository, each with a
    ``shadow`` label the rollout does not own): every verb, dry-run and real, on one of them."""
    repository, config, servers, targets, relaxed = fleet
    two_models = read_config(config)
    other = two_models.model_config_list.config.add()
    other.CopyFrom(two_models.model_config_list.config[0])
    other.name = "other"
    # A label may only name a loaded version: load the second model first, then label it.
    other.version_labels.clear()
    config.write_text(text_format.MessageToString(two_models))
    for server in servers:
        wait_for(lambda server=server: states(server, "other") == ["AVAILABLE"], what="other")
    for model in two_models.model_config_list.config:
        model.version_labels["stable"] = 1
        model.version_labels["shadow"] = 1
    config.write_text(text_format.MessageToString(two_models))
    for server in servers:
        wait_for(
            lambda server=server: labels_served(server, "other", ("shadow",)) == {"shadow": 1},
            what="the servers labelling the second model",
        )
    untouched = "other" if rolled == "imdb" else "imdb"
    before = model_of(config, untouched)
    targets = [*targets, "--model-name", rolled] if rolled != "imdb" else targets
    assert rollout(["publish", "--repository", str(repository),
                    "--version-dir", str(exported_version), "--version", "2"]) == 0  # fmt: skip
    steps = [
        (["canary", *targets, *relaxed], {"stable": 1, "canary": 2}),
        (["rollback", *targets], {"stable": 1}),
        (["canary", *targets, *relaxed], {"stable": 1, "canary": 2}),
        (["promote", *targets], {"stable": 2, "previous": 1}),
        (["status", *targets], {"stable": 2, "previous": 1}),
        (["rollback", *targets], {"stable": 1}),
    ]
    for argv, labels in steps:
        text = config.read_text()
        assert rollout([*argv, "--dry-run"]) == 0, argv
        assert config.read_text() == text
        assert rollout(argv) == 0, argv
        assert dict(model_of(config, rolled).version_labels) == {**labels, "shadow": 1}, argv
        assert model_of(config, untouched) == before, argv
        for server in servers:
            assert labels_served(server, rolled, WITH_SHADOW) == {
                label: labels.get(label, "INVALID_ARGUMENT") for label in LABELS
            } | {"shadow": 1}, argv
            assert labels_served(server, untouched, WITH_SHADOW) == {
                "stable": 1, "canary": "INVALID_ARGUMENT", "previous": "INVALID_ARGUMENT",
                "shadow": 1,
            }, argv  # fmt: skip
    status = capsys.readouterr().out
    assert "labels {'previous': 1, 'shadow': 1, 'stable': 2}" in status
