"""The local server with --enable_batching: merged runs, TF Serving's errors, a version swap."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.client import GrpcClient, RestClient
from serving.savedmodel import SessionBundle
from tests.helpers import wait_for

REVIEWS = [
    "A wonderful, brilliant film. I loved every minute of it.",
    "An awful, boring film. A complete waste of time.",
    "It was fine.",
    "",
]
# A review on which the session run of the test below raises.
BROKEN = "A review on which the session run raises."
BATCHING = """
max_batch_size { value: 32 }
batch_timeout_micros { value: 20000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
"""


@pytest.fixture
def batching_server(server_on_copy, tmp_path):
    parameters = tmp_path / "batching.config"
    parameters.write_text(BATCHING)
    return server_on_copy(
        file_system_poll_wait_seconds=0.2,
        enable_batching=True,
        batching_parameters_file=str(parameters),
    )


def add_version_2(exported_version, base) -> None:
    shutil.copytree(exported_version, base / ".incoming")
    (base / ".incoming").rename(base / "2")


def version_2_replaced_1(rest_port: int) -> bool:
    with RestClient(f"http://127.0.0.1:{rest_port}") as client:
        states = {int(v.version): v.state for v in client.status()}
    return states.get(2) == "AVAILABLE" and states.get(1) in (None, "END")


def test_concurrent_single_reviews_are_merged_and_answered_alike(batching_server, exported_version):
    server, _ = batching_server
    bundle = SessionBundle(exported_version)
    try:
        inputs = {"review": np.array(REVIEWS, dtype=object)}
        expected = bundle.run("serving_default", inputs)["probability"]
    finally:
        bundle.close()
    target = f"127.0.0.1:{server.grpc_port}"
    with GrpcClient(target) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: client.predict([REVIEWS[i % 4]])[0], range(64)))
    for index, answer in enumerate(answers):
        assert answer.probability == pytest.approx(float(expected[index % 4]), abs=1e-6)
    assert server.scheduler.tasks_run == 64
    assert server.scheduler.batches_run < 64  # merged


def test_a_request_over_max_batch_size_is_refused_as_tf_serving_does(batching_server):
    server, _ = batching_server
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/imdb:predict"
    response = requests.post(url, json={"instances": ["fine"] * 33}, timeout=30)
    assert response.status_code == 400
    assert response.json() == {"error": "Task size 33 is larger than maximum input batch size 32"}


def test_a_version_swap_under_load_loses_no_request(batching_server, exported_version):
    server, base = batching_server
    stop, failures, answered = threading.Event(), [], [0]

    def load() -> None:
        with RestClient(f"http://127.0.0.1:{server.rest_port}") as client:
            while not stop.is_set():
                try:
                    client.predict([REVIEWS[0]])
                    answered[0] += 1
                except Exception as error:  # every failure is a finding
                    failures.append(error)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        add_version_2(exported_version, base)
        wait_for(lambda: version_2_replaced_1(server.rest_port), 60, "version 2 replacing 1")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == [] and answered[0] > 0


def test_a_batch_that_raises_answers_internal_and_the_server_goes_on(
    batching_server, exported_version, monkeypatch
):
    server, base = batching_server
    with server.manager.lease("imdb") as lease:
        bundle = lease.bundle
    session_run = bundle.run

    def run(signature_name, inputs, output_keys=None, timeout_seconds=None):
        reviews = [r.decode() if isinstance(r, bytes) else r for r in inputs["review"].tolist()]
        if BROKEN in reviews:
            raise ValueError("the session could not run")
        return session_run(signature_name, inputs, output_keys, timeout_seconds)

    monkeypatch.setattr(bundle, "run", run)  # version 1's session, inside the batch thread
    url = f"http://127.0.0.1:{server.rest_port}/v1/models/imdb:predict"
    response = requests.post(url, json={"instances": [BROKEN]}, timeout=20)
    assert response.status_code == 500
    assert response.json() == {"error": "ValueError: the session could not run"}

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "imdb"
    request.inputs["review"].CopyFrom(
        tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING,
            tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
            ),
            string_val=[BROKEN.encode()],
        )
    )
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(request)
        try:
            error = call.exception(timeout=20)  # the call has no deadline of its own
        finally:
            call.cancel()
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "ValueError: the session could not run"

    # Both batch threads still serve, and the failed requests hold no lease: version 1 unloads.
    with RestClient(f"http://127.0.0.1:{server.rest_port}") as client:
        assert len(client.predict(REVIEWS)) == len(REVIEWS)
    add_version_2(exported_version, base)
    wait_for(lambda: version_2_replaced_1(server.rest_port), 60, "version 2 replacing 1")
