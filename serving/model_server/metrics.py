"""TF Serving's Prometheus metrics, for what the local server does.

Names, labels and units are TF Serving's (its ``prometheus_exporter.cc`` turns the TF metric
``/tensorflow/serving/request_count`` into ``:tensorflow:serving:request_count``), so dashboards
and alerts written for ``tensorflow/serving`` work against the local server too:

- ``:tensorflow:serving:request_count{model_name,status}`` (counter): every REST and gRPC
  model request, by its status code name;
- ``:tensorflow:serving:request_latency{model_name,API,entrypoint}`` (histogram, microseconds):
  successful requests, from arrival to answer;
- ``:tensorflow:serving:runtime_latency{model_name,API,runtime}`` (histogram, microseconds): the
  session run inside them;
- ``:tensorflow:cc:saved_model:load_attempt_count{model_path,status}`` (counter): version loads;
- ``:tensorflow:serving:model_warmup_latency{model_path,status}`` (histogram, microseconds);
- ``imdb_local_batching_queued_tasks`` (gauge): requests waiting in the batch queues
  (``--enable_batching``). This one is the local server's own, so it stays out of TF Serving's
  namespace and out of the production dashboard and rules; TF Serving's batching metrics
  (``:tensorflow:serving:batching_session:...``) are not emitted here.

``serving/tf_serving_metrics.py`` is the list of what TF Serving exports, with the sources; the
names above come from it, and a test checks that everything else the endpoint writes is in it.

The counts live here; ``prometheus_client`` writes the exposition format. A custom collector is
used because ``prometheus_client``'s ``Counter`` would rename ``request_count`` to
``request_count_total``, which TF Serving does not. The one visible difference: the two counters
are declared ``# TYPE ... untyped`` where TF Serving writes ``counter``; PromQL (``rate``,
``increase``) treats the series alike.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from serving import tf_serving_metrics
from serving.contract import REQUEST_COUNT_METRIC

# TF Serving's latency buckets: Buckets::Exponential(10, 1.8, 33), in microseconds.
LATENCY_BUCKETS_MICROS = tuple(10 * 1.8**index for index in range(33))
REQUEST_COUNT = REQUEST_COUNT_METRIC
REQUEST_LATENCY = tf_serving_metrics.REQUEST_LATENCY
RUNTIME_LATENCY = tf_serving_metrics.RUNTIME_LATENCY
LOAD_ATTEMPT_COUNT = tf_serving_metrics.LOAD_ATTEMPT_COUNT
WARMUP_LATENCY = tf_serving_metrics.MODEL_WARMUP_LATENCY
# The local server's own gauge: requests waiting in its batch queues. Not a TF Serving metric,
# so not in TF Serving's ":tensorflow:" namespace.
LOCAL_BATCH_QUEUED_TASKS = "imdb_local_batching_queued_tasks"
# The runtime label of runtime_latency.
RUNTIME = "TF1"


class _Histogram:
    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS_MICROS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, micros: float) -> None:
        self.buckets[bisect_left(LATENCY_BUCKETS_MICROS, micros)] += 1
        self.sum += micros
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        total, result = 0, []
        for bound, count in zip((*LATENCY_BUCKETS_MICROS, float("inf")), self.buckets, strict=True):
            total += count
            result.append(("+Inf" if bound == float("inf") else f"{bound:g}", total))
        return result


class ServingMetrics:
    """Thread-safe counters and histograms, exposed by ``collect`` in TF Serving's names."""

    def __init__(self, queued_tasks: Callable[[], int] | None = None):
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
        self._histograms: dict[str, dict[tuple, _Histogram]] = defaultdict(dict)
        self._labels = {
            REQUEST_COUNT: ("model_name", "status"),
            REQUEST_LATENCY: ("model_name", "API", "entrypoint"),
            RUNTIME_LATENCY: ("model_name", "API", "runtime"),
            LOAD_ATTEMPT_COUNT: ("model_path", "status"),
            WARMUP_LATENCY: ("model_path", "status"),
        }
        self.queued_tasks = queued_tasks
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def count_request(self, model_name: str, status: str) -> None:
        self._increment(REQUEST_COUNT, (model_name, status))

    def observe_request(self, model_name: str, api: str, entrypoint: str, seconds: float) -> None:
        self._observe(REQUEST_LATENCY, (model_name, api, entrypoint), seconds)

    def observe_runtime(self, model_name: str, api: str, seconds: float) -> None:
        self._observe(RUNTIME_LATENCY, (model_name, api, RUNTIME), seconds)

    def count_load(self, model_path: str, status: str) -> None:
        self._increment(LOAD_ATTEMPT_COUNT, (model_path, status))

    def observe_warmup(self, model_path: str, status: str, seconds: float) -> None:
        self._observe(WARMUP_LATENCY, (model_path, status), seconds)

    def _increment(self, name: str, labels: tuple) -> None:
        with self._lock:
            self._counters[name][labels] += 1

    def _observe(self, name: str, labels: tuple, seconds: float) -> None:
        with self._lock:
            histogram = self._histograms[name].get(labels)
            if histogram is None:
                histogram = self._histograms[name][labels] = _Histogram()
            histogram.observe(seconds * 1e6)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            for name, series in self._counters.items():
                # "unknown" (written as untyped): as "counter", prometheus_client would name
                # the series <name>_total, and queries written for TF Serving would miss them.
                family = Metric(name, "", "unknown")
                for labels, value in series.items():
                    family.add_sample(
                        name, dict(zip(self._labels[name], labels, strict=True)), value
                    )
                yield family
            for name, series in self._histograms.items():
                family = HistogramMetricFamily(name, "", labels=self._labels[name])
                for labels, histogram in series.items():
                    family.add_metric(list(labels), histogram.cumulative(), histogram.sum)
                yield family
        if self.queued_tasks is not None:
            yield GaugeMetricFamily(LOCAL_BATCH_QUEUED_TASKS, "", value=self.queued_tasks())

    def exposition(self) -> bytes:
        """The text exposition format (version 0.0.4) of every metric."""
        return generate_latest(self.registry)
