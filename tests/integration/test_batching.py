"""The local server with --enable_batching: merged runs, TF Serving's errors, a version swap."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from serving.client import GrpcClient, RestClient
from serving.savedmodel import SessionBundle
from tests.helpers import wait_for

REVIEWS = [
    "A wonderful, brilliant film. I loved every minute of it.",
    "An awful, boring film. A complete waste of time.",
    "It was fine.",
    "",
]
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
        shutil.copytree(exported_version, base / ".incoming")
        (base / ".incoming").rename(base / "2")
        with RestClient(f"http://127.0.0.1:{server.rest_port}") as client:

            def swapped() -> bool:
                states = {int(v.version): v.state for v in client.status()}
                return states.get(2) == "AVAILABLE" and states.get(1) in (None, "END")

            wait_for(swapped, timeout=60, what="version 2 AVAILABLE and version 1 unloaded")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert failures == [] and answered[0] > 0
