"""Server-side batching, as TF Serving's ``--enable_batching``: concurrent Predict calls on the
same version and signature are merged into one session run and split back per request.

Single-review requests each pay the whole per-request cost of a session run; merging the ones
that arrive together lets the string ops and the matrix products work on one larger batch.

The scheduler follows TF Serving's ``BasicBatchScheduler``:
- requests (tasks) join the open batch of their queue (one queue per version, signature, input
  keys and output filter, so different signatures or filters are never mixed); a task that does
  not fit closes the open batch and opens the next one;
- ``num_batch_threads`` threads run the oldest ready batch: one that is closed or full, or whose
  first task has waited ``batch_timeout_micros`` (0: ready as soon as a thread is free, so that
  batches grow only while every thread is busy);
- a queue holding ``max_enqueued_batches`` batches refuses more tasks with UNAVAILABLE
  (HTTP 503); a task larger than ``max_batch_size`` is INVALID_ARGUMENT;
- with ``allowed_batch_sizes``, a batch is padded up to the next allowed size (the padding rows
  repeat the first review and are dropped from the outputs);
- a batch that fails fails every request in it: with TF Serving's FAILED_PRECONDITION when the
  requests' tensors differ beyond dimension 0, with the session's code when the run fails, and
  with INTERNAL for any other error; the thread goes on with the next batch.

A request keeps its version leased until its outputs arrive, so a version swap cannot unload a
version under a running batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import text_format

from serving.cli_args import usable_cpus
from serving.model_server.config_protos import BatchingParameters
from serving.model_server.errors import ServingError, invalid_argument
from serving.model_server.session_run import run_bundle
from serving.savedmodel import SessionBundle

logger = logging.getLogger(__name__)

# TF Serving's defaults (BasicBatchScheduler::Options) for a field the file leaves out.
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0
DEFAULT_MAX_ENQUEUED_BATCHES = 10
# Fields that are parsed and checked, but change nothing here (logged when set).
_IGNORED_FIELDS = (
    "thread_pool_name",
    "pad_variable_length_inputs",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
)


@dataclass(frozen=True)
class BatchingOptions:
    """The batching parameters the scheduler uses, validated as TF Serving validates them."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    batch_timeout_micros: int = DEFAULT_BATCH_TIMEOUT_MICROS
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = field(default_factory=usable_cpus)
    allowed_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(
                f"batch_timeout_micros must be non-negative, got {self.batch_timeout_micros}"
            )
        sizes = self.allowed_batch_sizes
        if sizes:
            if any(size <= 0 for size in sizes) or list(sizes) != sorted(set(sizes)):
                raise ValueError(
                    "allowed_batch_sizes entries must be positive and monotonically increasing"
                )
            if sizes[-1] != self.max_batch_size:
                raise ValueError(
                    "Last entry in allowed_batch_sizes must match max_batch_size; last "
                    f"entry was {sizes[-1]}; expected {self.max_batch_size}"
                )

    @classmethod
    def from_text(cls, text: str, source: str = "batching parameters") -> BatchingOptions:
        """Parses a text ``BatchingParameters`` (the ``--batching_parameters_file`` format).

        Raises:
            ValueError: a syntax error, an unknown field, or a value TF Serving refuses.
        """
        parameters = BatchingParameters()
        try:
            text_format.Parse(text, parameters)
        except text_format.ParseError as error:
            raise ValueError(f"{source}: {error}") from error
        for name in _IGNORED_FIELDS:
            is_set = (
                getattr(parameters, name)
                if name == "pad_variable_length_inputs"
                else (parameters.HasField(name))
            )
            if is_set:
                logger.warning("%s: %s is not implemented locally; ignored", source, name)
        values = {
            name: getattr(parameters, name).value
            for name in (
                "max_batch_size",
                "batch_timeout_micros",
                "max_enqueued_batches",
                "num_batch_threads",
            )
            if parameters.HasField(name)
        }
        try:
            return cls(**values, allowed_batch_sizes=tuple(parameters.allowed_batch_sizes))
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error

    @classmethod
    def from_file(cls, path: str | Path) -> BatchingOptions:
        return cls.from_text(Path(path).read_text(encoding="utf-8"), source=str(path))


@dataclass(eq=False)
class _Task:
    """One request waiting for its share of a batch's outputs."""

    inputs: dict[str, np.ndarray]
    size: int
    done: threading.Event = field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: ServingError | None = None


@dataclass(eq=False)
class _Batch:
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    opened_at: float = field(default_factory=time.monotonic)
    closed: bool = False


@dataclass(eq=False)
class _Queue:
    bundle: SessionBundle
    signature_name: str
    output_keys: tuple[str, ...]
    batches: deque[_Batch] = field(default_factory=deque)


class BatchScheduler:
    """Merges concurrent runs of one signature into batches; shared by every model and version.

    ``run`` blocks the calling request thread until its outputs are ready.
    """

    def __init__(self, options: BatchingOptions):
        self.options = options
        self._changed = threading.Condition()
        self._queues: dict[tuple, _Queue] = {}
        self._stopped = False
        # Counters for tests and metrics: session runs made, and requests they served.
        self.batches_run = 0
        self.tasks_run = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"batch-{index}", daemon=True)
            for index in range(options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def run(
        self,
        bundle: SessionBundle,
        signature_name: str,
        inputs: dict[str, np.ndarray],
        output_keys: list[str],
        timeout_seconds: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs the signature on ``inputs`` as part of a batch and returns this request's rows.

        Raises:
            ServingError: INVALID_ARGUMENT (no common batch dimension, larger than
                max_batch_size), UNAVAILABLE (queue full, shutting down), DEADLINE_EXCEEDED,
                or the session's own error.
        """
        size = _batch_size(inputs)
        if size == 0:  # nothing to merge
            return run_bundle(bundle, signature_name, inputs, output_keys, timeout_seconds)
        if size > self.options.max_batch_size:
            raise invalid_argument(
                f"Task size {size} is larger than maximum input batch size "
                f"{self.options.max_batch_size}"
            )
        task = _Task({key: np.asarray(value) for key, value in inputs.items()}, size)
        key = (id(bundle), signature_name, tuple(sorted(inputs)), tuple(output_keys))
        with self._changed:
            if self._stopped:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "The batch scheduler is stopped")
            queue = self._queues.get(key)
            if queue is None or queue.bundle is not bundle:
                queue = self._queues[key] = _Queue(bundle, signature_name, tuple(output_keys))
            self._enqueue(queue, task)
            self._changed.notify_all()
        if not task.done.wait(timeout_seconds):
            # The task may still run; its outputs are then dropped.
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def queued_tasks(self) -> int:
        """Requests waiting in the queues (not yet running)."""
        with self._changed:
            return sum(len(b.tasks) for q in self._queues.values() for b in q.batches)

    def stop(self) -> None:
        """Fails the waiting tasks with UNAVAILABLE and stops the threads."""
        with self._changed:
            self._stopped = True
            for queue in self._queues.values():
                for batch in queue.batches:
                    for task in batch.tasks:
                        task.error = ServingError(
                            grpc.StatusCode.UNAVAILABLE, "The batch scheduler is stopped"
                        )
                        task.done.set()
            self._queues.clear()
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _enqueue(self, queue: _Queue, task: _Task) -> None:
        batches = queue.batches
        open_batch = batches[-1] if batches and not batches[-1].closed else None
        if open_batch is None or open_batch.size + task.size > self.options.max_batch_size:
            if open_batch is not None:
                open_batch.closed = True
            if len(batches) >= self.options.max_enqueued_batches:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    "The batch scheduling queue to which this task was submitted is full",
                )
            open_batch = _Batch()
            batches.append(open_batch)
        open_batch.tasks.append(task)
        open_batch.size += task.size
        if open_batch.size == self.options.max_batch_size:
            open_batch.closed = True

    def _work(self) -> None:
        while True:
            with self._changed:
                taken = self._take_ready_batch()
                while taken is None:
                    if self._stopped:
                        return
                    self._changed.wait(self._seconds_until_a_batch_times_out())
                    taken = self._take_ready_batch()
            queue, batch = taken
            self._run_batch(queue, batch)

    def _take_ready_batch(self) -> tuple[_Queue, _Batch] | None:
        """The oldest batch that may run now, removed from its queue (lock held)."""
        timeout = self.options.batch_timeout_micros / 1e6
        now = time.monotonic()
        ready = [
            (queue.batches[0].opened_at, key)
            for key, queue in self._queues.items()
            if queue.batches
            and queue.batches[0].tasks
            and (queue.batches[0].closed or now - queue.batches[0].opened_at >= timeout)
        ]
        if not ready:
            return None
        key = min(ready)[1]
        queue = self._queues[key]
        batch = queue.batches.popleft()
        if not queue.batches:
            del self._queues[key]
        return queue, batch

    def _seconds_until_a_batch_times_out(self) -> float | None:
        timeout = self.options.batch_timeout_micros / 1e6
        opened = [q.batches[0].opened_at for q in self._queues.values() if q.batches]
        if not opened:
            return None
        return max(0.0, min(opened) + timeout - time.monotonic())

    def _run_batch(self, queue: _Queue, batch: _Batch) -> None:
        """Runs one batch and gives each task its rows, or the batch's error."""
        tasks = batch.tasks
        try:
            outputs = self._run_merged(queue, batch)
        except ServingError as error:
            self._fail(tasks, error)
            return
        except Exception as error:  # the thread must survive, and every waiting task get an answer
            logger.exception("A batch of %d request(s) failed", len(tasks))
            self._fail(
                tasks, ServingError(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}")
            )
            return
        with self._changed:
            self.batches_run += 1
            self.tasks_run += len(tasks)
        start = 0
        for task in tasks:
            task.outputs = {key: value[start : start + task.size] for key, value in outputs.items()}
            start += task.size
            task.done.set()

    def _run_merged(self, queue: _Queue, batch: _Batch) -> dict[str, np.ndarray]:
        """The outputs of one session run on the batch's merged (and padded) inputs.

        Raises:
            ServingError: FAILED_PRECONDITION (tensors of different shapes, or an output without
                the batch dimension), or the session's error.
        """
        tasks = batch.tasks
        padded = self._padded_size(batch.size)
        inputs = {}
        for key in tasks[0].inputs:
            parts = [task.inputs[key] for task in tasks]
            if any(part.shape[1:] != parts[0].shape[1:] for part in parts):
                tensor_name = queue.bundle.inputs(queue.signature_name)[key].tensor_name
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Tensors with name '{tensor_name}' from different tasks have different "
                    "shapes and padding is turned off. Set pad_variable_length_inputs to true, "
                    "or ensure that all tensors with the same name have equal dimensions "
                    "starting with the first dim.",
                )
            if padded > batch.size:
                parts.append(np.repeat(parts[0][:1], padded - batch.size, axis=0))
            inputs[key] = np.concatenate(parts, axis=0)
        outputs = run_bundle(queue.bundle, queue.signature_name, inputs, list(queue.output_keys))
        for key, value in outputs.items():
            if np.ndim(value) == 0 or len(value) != padded:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Batched output tensor {key} has no batch dimension of size {padded}",
                )
        return outputs

    @staticmethod
    def _fail(tasks: list[_Task], error: ServingError) -> None:
        for task in tasks:
            task.error = error
            task.done.set()

    def _padded_size(self, size: int) -> int:
        return next((s for s in self.options.allowed_batch_sizes if s >= size), size)


def _batch_size(inputs: dict[str, np.ndarray]) -> int:
    sizes = {np.shape(value)[0] if np.ndim(value) else None for value in inputs.values()}
    if None in sizes or not sizes:
        raise invalid_argument(
            "Batching Run() must have at least one input tensor with a batch dimension, and "
            "every input tensor must have one"
        )
    if len(sizes) > 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()
