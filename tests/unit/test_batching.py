"""Server-side batching: merging, splitting, the queue's limits, and the parameters file."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf

from serving.model_server.batching import BatchingOptions, BatchScheduler
from serving.model_server.errors import ServingError
from serving.savedmodel import TensorInfo
from tests.helpers import wait_for


class FakeBundle:
    """Doubles its input; records every run; can be held until released."""

    def __init__(self, name: str = "v1", delay: float = 0.0):
        self.name, self.delay = name, delay
        self.runs: list[tuple[str, int]] = []
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()

    def run(self, signature_name, inputs, output_keys, timeout_seconds=None):
        self.started.set()
        self.release.wait(10)
        time.sleep(self.delay)
        self.runs.append((signature_name, len(inputs["x"])))
        doubled = inputs["x"] * 2
        return {key: doubled for key in output_keys}

    def inputs(self, signature_name):
        return {"x": TensorInfo("x:0", tf.float32, None)}


class FailingBundle(FakeBundle):
    """Its run raises what a bug or a broken graph might: an error that is no ServingError."""

    def run(self, signature_name, inputs, output_keys, timeout_seconds=None):
        self.runs.append((signature_name, len(inputs["x"])))
        raise ValueError("the session could not run")


def scheduler(**options) -> BatchScheduler:
    return BatchScheduler(BatchingOptions(**{"num_batch_threads": 1, **options}))


def run(batcher, bundle, values, signature="serving_default", outputs=("y",)):
    return batcher.run(bundle, signature, {"x": np.array(values)}, list(outputs), 10)


def one_batch(batcher, bundle, requests) -> list:
    """Runs the requests (lists of values) as one batch on a one-thread scheduler: they queue
    while its thread is held by another bundle. Returns each request's outputs or error."""
    held = FakeBundle("held")
    held.release.clear()
    with ThreadPoolExecutor(len(requests) + 1) as pool:
        first = pool.submit(run, batcher, held, [0])
        assert held.started.wait(5)
        calls = [pool.submit(run, batcher, bundle, values) for values in requests]
        wait_for(lambda: batcher.queued_tasks() == len(requests), 5, "the requests queued")
        held.release.set()
        first.result()
        return [call.exception() or call.result() for call in calls]


def test_concurrent_requests_are_merged_and_split_back():
    batcher, bundle = scheduler(max_batch_size=64), FakeBundle(delay=0.05)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: run(batcher, bundle, [i, 100 + i]), range(16)))
    finally:
        batcher.stop()
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result["y"], [2 * i, 200 + 2 * i])
    assert len(bundle.runs) < 16 and sum(size for _, size in bundle.runs) == 32
    assert (batcher.batches_run, batcher.tasks_run) == (len(bundle.runs), 16)


def test_a_full_queue_answers_unavailable():
    batcher, bundle = scheduler(max_batch_size=2, max_enqueued_batches=1), FakeBundle()
    bundle.release.clear()
    try:
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(run, batcher, bundle, [1])
            assert bundle.started.wait(5)  # the only thread is busy with the first batch
            second = pool.submit(run, batcher, bundle, [2, 3])  # fills the one queued batch
            time.sleep(0.1)
            with pytest.raises(ServingError) as error:
                run(batcher, bundle, [4])
            assert error.value.code == grpc.StatusCode.UNAVAILABLE
            assert "queue to which this task was submitted is full" in error.value.message
            bundle.release.set()
            assert first.result()["y"].tolist() == [2]
            assert second.result()["y"].tolist() == [4, 6]
    finally:
        batcher.stop()


def test_a_request_larger_than_max_batch_size_is_invalid():
    batcher = scheduler(max_batch_size=4)
    try:
        with pytest.raises(ServingError) as error:
            run(batcher, FakeBundle(), [1, 2, 3, 4, 5])
    finally:
        batcher.stop()
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.message == "Task size 5 is larger than maximum input batch size 4"


def test_signatures_output_filters_and_versions_are_never_mixed():
    batcher, v1, v2 = scheduler(max_batch_size=64), FakeBundle("v1"), FakeBundle("v2")
    v1.release.clear()
    try:
        with ThreadPoolExecutor(8) as pool:
            held = pool.submit(run, batcher, v1, [0])
            assert v1.started.wait(5)
            calls = [
                pool.submit(run, batcher, v1, [1], "serving_default", ("y",)),
                pool.submit(run, batcher, v1, [2], "other", ("y",)),
                pool.submit(run, batcher, v1, [3], "serving_default", ("z",)),
                pool.submit(run, batcher, v2, [4], "serving_default", ("y",)),  # a new version
            ]
            time.sleep(0.1)
            v1.release.set()
            results = [call.result() for call in calls]
            held.result()
    finally:
        batcher.stop()
    assert [next(iter(r.values())).tolist() for r in results] == [[2], [4], [6], [8]]
    # Each request ran in its own batch: no two of them share signature, filter and version.
    assert sorted(v1.runs) == [("other", 1), *[("serving_default", 1)] * 3]
    assert v2.runs == [("serving_default", 1)]  # v2's request ran on v2 alone


def test_batches_are_padded_to_an_allowed_size():
    batcher, bundle = scheduler(max_batch_size=8, allowed_batch_sizes=(4, 8)), FakeBundle()
    try:
        assert run(batcher, bundle, [1, 2, 3])["y"].tolist() == [2, 4, 6]
    finally:
        batcher.stop()
    assert bundle.runs == [("serving_default", 4)]


def test_a_batch_timeout_waits_for_more_requests():
    batcher, bundle = scheduler(max_batch_size=64, batch_timeout_micros=200_000), FakeBundle()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda i: run(batcher, bundle, [i]), range(4)))
    finally:
        batcher.stop()
    assert [r["y"].tolist() for r in results] == [[0], [2], [4], [6]]
    assert bundle.runs == [("serving_default", 4)]


def test_a_batch_whose_run_raises_fails_every_request_in_it_and_the_thread_goes_on(caplog):
    batcher, failing = scheduler(max_batch_size=64), FailingBundle()
    try:
        errors = one_batch(batcher, failing, [[1], [2, 3], [4]])
        assert failing.runs == [("serving_default", 4)]  # the three requests in one batch
        for error in errors:
            assert isinstance(error, ServingError)
            assert error.code == grpc.StatusCode.INTERNAL
            assert error.message == "ValueError: the session could not run"
        assert "A batch of 3 request(s) failed" in caplog.text  # with the traceback
        # The only batch thread survived: the next batch runs.
        assert run(batcher, FakeBundle(), [5])["y"].tolist() == [10]
    finally:
        batcher.stop()


def test_tensors_that_differ_beyond_the_batch_dimension_fail_the_batch_as_tf_serving_does():
    batcher, bundle = scheduler(max_batch_size=64), FakeBundle()
    try:
        errors = one_batch(batcher, bundle, [[[1, 2]], [[3, 4, 5]]])
        assert bundle.runs == []
        for error in errors:
            assert isinstance(error, ServingError)
            assert error.code == grpc.StatusCode.FAILED_PRECONDITION
            assert error.message == (
                "Tensors with name 'x:0' from different tasks have different shapes and padding "
                "is turned off. Set pad_variable_length_inputs to true, or ensure that all "
                "tensors with the same name have equal dimensions starting with the first dim."
            )
        assert run(batcher, bundle, [[1, 2]])["y"].tolist() == [[2, 4]]
    finally:
        batcher.stop()


def test_parameters_file_parses_like_tf_serving(caplog):
    text = """
        max_batch_size { value: 32 }
        batch_timeout_micros { value: 1000 }
        max_enqueued_batches { value: 4 }
        num_batch_threads { value: 2 }
        allowed_batch_sizes: 8
        allowed_batch_sizes: 32
        thread_pool_name { value: "batch_threads" }
    """
    with caplog.at_level(logging.WARNING):
        options = BatchingOptions.from_text(text)
    assert options == BatchingOptions(32, 1000, 4, 2, (8, 32))
    assert "thread_pool_name is not implemented locally; ignored" in caplog.text
    assert BatchingOptions.from_text("").max_batch_size == 1000  # TF Serving's default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_batch_size { value: 32 } allowed_batch_sizes: 16", "must match max_batch_size"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4", "increasing"),
        ("max_batch_size { value: 0 }", "max_batch_size must be positive"),
        ("batch_timeout_micros { value: -1 }", "non-negative"),
        ("max_batch_size: 32", "max_batch_size"),  # a wrapper, not a plain int
        ("no_such_field { value: 1 }", "no_such_field"),
        ("max_batch_size { value: ", "batching parameters"),
    ],
)
def test_bad_parameters_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        BatchingOptions.from_text(text)
