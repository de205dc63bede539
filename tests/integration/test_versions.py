"""Version lifecycle of the local server: polling, availability preservation, failures, labels."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from serving.client import GrpcClient, RequestError, RestClient
from serving.model_server.server import ModelServer, StartupError
from tests.helpers import loopback_server, wait_for

POSITIVE = "A wonderful, brilliant film. I loved every minute of it."


def add_version(exported_version: Path, base: Path, number: int) -> None:
    """Copies a version in the way export does: into a hidden folder, then one rename."""
    staging = base / f".copy-{number}"
    shutil.copytree(exported_version, staging)
    staging.rename(base / str(number))


def add_broken_version(base: Path, number: int) -> None:
    (base / str(number)).mkdir()
    (base / str(number) / "saved_model.pb").write_bytes(b"this is not a protobuf")


def make_server(**options) -> ModelServer:
    defaults = dict(
        model_name="imdb",
        file_system_poll_wait_seconds=0.2,
        max_num_load_retries=1,
        load_retry_interval_micros=100_000,
    )
    return loopback_server(**(defaults | options))


def states(client: RestClient) -> dict[int, str]:
    return {v.version: v.state for v in client.status()}


def served_version(server: ModelServer, **spec) -> int:
    with GrpcClient(f"127.0.0.1:{server.grpc_port}") as client:
        client.predict([POSITIVE], **spec)
        return client.metadata(spec.get("version")).version


def test_new_versions_replace_old_ones_and_failures_keep_the_old_one(tmp_path, exported_version):
    base = tmp_path / "imdb"
    base.mkdir()
    add_version(exported_version, base, 1)
    (base / "tmp").mkdir()
    (base / "1.partial").mkdir()
    server = make_server(model_base_path=str(base))
    server.start(load_timeout=60)
    try:
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
        assert states(rest) == {1: "AVAILABLE"}

        add_version(exported_version, base, 2)
        wait_for(lambda: states(rest) == {2: "AVAILABLE", 1: "END"})
        assert [v.version for v in rest.status()] == [2, 1]  # highest first
        assert served_version(server) == 2

        add_broken_version(base, 3)
        wait_for(lambda: states(rest).get(3) == "END")
        (broken,) = [v for v in rest.status() if v.version == 3]
        assert broken.error_code != "OK" and broken.error_message
        # Availability preserving: the failed version never replaced the working one.
        assert states(rest)[2] == "AVAILABLE"
        assert rest.predict([POSITIVE])[0].label == "positive"

        for child in base.iterdir():
            shutil.rmtree(child)
        wait_for(lambda: "AVAILABLE" not in states(rest).values())
        with pytest.raises(RequestError) as error:
            rest.predict([POSITIVE])
        assert error.value.code == "NOT_FOUND"
    finally:
        server.stop(grace_seconds=1)


def test_startup_fails_when_the_only_version_cannot_load(tmp_path):
    base = tmp_path / "imdb"
    base.mkdir()
    add_broken_version(base, 1)
    server = make_server(model_base_path=str(base), max_num_load_retries=0)
    with pytest.raises(StartupError, match=r"1 servable\(s\) did not become available"):
        server.start(load_timeout=60)


def test_ports_stay_closed_while_no_version_exists(tmp_path):
    base = tmp_path / "imdb"
    base.mkdir()
    before = set(threading.enumerate())
    server = make_server(model_base_path=str(base))
    with pytest.raises(StartupError, match="did not become available within 1 s"):
        server.start(load_timeout=1)
    assert server.rest_port is None and server.grpc_port is None
    # The failed start stopped the model manager it had started.
    wait_for(lambda: not set(threading.enumerate()) - before, 10, "the manager thread ended")
    server.stop()


def test_model_config_file_with_policy_and_labels(tmp_path, exported_version, capsys):
    base = tmp_path / "imdb"
    base.mkdir()
    for number in (1, 2, 3):
        add_version(exported_version, base, number)
    config = tmp_path / "models.config"
    config.write_text(
        f"""
        model_config_list {{
          config {{
            name: "imdb"
            base_path: "{base}"
            model_platform: "tensorflow"
            model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
            version_labels {{ key: "stable" value: 1 }}
            version_labels {{ key: "canary" value: 2 }}
          }}
        }}
        """
    )
    server = make_server(model_config_file=str(config))
    server.start(load_timeout=60)
    try:
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
        wait_for(lambda: states(rest) == {2: "AVAILABLE", 1: "AVAILABLE"})
        assert served_version(server) == 2
        assert served_version(server, version=1) == 1
        with GrpcClient(f"127.0.0.1:{server.grpc_port}") as grpc_client:
            assert grpc_client.predict([POSITIVE], label="stable")[0].label == "positive"
        assert rest.predict([POSITIVE], label="canary")[0].label == "positive"
        with pytest.raises(RequestError, match="Unrecognized servable version label: beta"):
            rest.predict([POSITIVE], label="beta")
        with pytest.raises(RequestError) as error:
            rest.predict([POSITIVE], version=3)
        assert error.value.code == "NOT_FOUND"
        # The smoke test checks the version a label names, over both transports.
        from serving.smoke import main as smoke

        endpoints = [
            f"--rest-url=http://127.0.0.1:{server.rest_port}",
            f"--grpc-target=127.0.0.1:{server.grpc_port}",
        ]
        assert smoke([*endpoints, "--label=canary", "--deadline=30"]) == 0
        printed = capsys.readouterr()
        assert "[REST] label 'canary' names version 2" in printed.out
        assert "[gRPC] label 'canary' names version 2" in printed.out
        assert smoke([*endpoints, "--label=beta", "--deadline=30"]) == 1
        assert "Unrecognized servable version label: beta" in capsys.readouterr().err
    finally:
        server.stop(grace_seconds=1)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            "model_config_list { config { name: 'imdb' base_path: 'relative' "
            "model_platform: 'tensorflow' } }",
            "to have an absolute path",
        ),
        ("model_config_list { config { name: 'imdb' base_path: '/m' } }", "model_platform"),
        (
            "model_config_list { config { name: 'a' base_path: '/m' model_platform: 'tensorflow' } "
            "config { name: 'a' base_path: '/n' model_platform: 'tensorflow' } }",
            "multiple times",
        ),
        ("model_config_list { config { nme: 'imdb' } }", "Invalid protobuf file"),
    ],
)
def test_bad_model_config_files_are_refused(tmp_path, config, message):
    path = tmp_path / "models.config"
    path.write_text(config)
    with pytest.raises(StartupError, match=message):
        make_server(model_config_file=str(path))


def write_config(path: Path, base: Path, versions: tuple[int, ...], labels: dict[str, int]) -> None:
    specific = " ".join(f"versions: {number}" for number in versions)
    label_lines = " ".join(
        f'version_labels {{ key: "{label}" value: {number} }}' for label, number in labels.items()
    )
    path.write_text(
        f'model_config_list {{ config {{ name: "imdb" base_path: "{base}" '
        f'model_platform: "tensorflow" model_version_policy {{ specific {{ {specific} }} }} '
        f"{label_lines} }} }}"
    )


def label_version(server: ModelServer, label: str) -> int | str:
    """The version a label sends a Predict to, or the error code."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.model_spec.version_label = label
    request.inputs["review"].dtype = 7  # DT_STRING
    request.inputs["review"].tensor_shape.dim.add(size=1)
    request.inputs["review"].string_val.append(POSITIVE.encode())
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            return stub.Predict(request, timeout=30).model_spec.version.value
        except grpc.RpcError as error:
            return error.code().name


@pytest.mark.parametrize("allow_unavailable", [False, True])
def test_a_polled_config_moves_labels_and_policies_without_a_restart(
    tmp_path, exported_version, allow_unavailable, caplog
):
    base = tmp_path / "imdb"
    base.mkdir()
    for number in (1, 2, 3):
        add_version(exported_version, base, number)
    config = tmp_path / "models.config"
    write_config(config, base, (1, 2), {"stable": 1})
    server = make_server(
        model_name="",
        model_config_file=str(config),
        model_config_file_poll_wait_seconds=0.2,
        allow_version_labels_for_unavailable_models=allow_unavailable,
    )
    server.start(load_timeout=60)
    try:
        rest = RestClient(f"http://127.0.0.1:{server.rest_port}")
        wait_for(lambda: states(rest) == {2: "AVAILABLE", 1: "AVAILABLE"})
        assert label_version(server, "stable") == 1
        # Promote: stable moves to 2, canary names 1; no restart.
        write_config(config, base, (1, 2), {"stable": 2, "canary": 1})
        wait_for(lambda: label_version(server, "stable") == 2, what="stable moved to 2")
        assert label_version(server, "canary") == 1
        # A label may not move to a version that is not AVAILABLE (3 is not in the policy):
        # the config is refused and the labels stay.
        write_config(config, base, (1, 2), {"stable": 3, "canary": 1})
        wait_for(lambda: "not currently available" in caplog.text, what="the refusal logged")
        assert label_version(server, "stable") == 2
        # A *new* label on an unavailable version: allowed only with the flag.
        write_config(config, base, (1, 2), {"stable": 2, "canary": 1, "next": 3})
        if allow_unavailable:
            wait_for(lambda: label_version(server, "next") == "NOT_FOUND", what="next known")
        else:
            wait_for(lambda: caplog.text.count("not currently available") >= 2, what="refused")
            assert label_version(server, "next") == "INVALID_ARGUMENT"  # unknown label
        # The policy changes too: version 3 joins and becomes AVAILABLE.
        write_config(config, base, (1, 2, 3), {"stable": 2, "canary": 1})
        wait_for(lambda: states(rest).get(3) == "AVAILABLE", what="version 3 loaded")
        assert served_version(server) == 3
    finally:
        server.stop(grace_seconds=1)
