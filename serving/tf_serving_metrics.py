"""The metrics ``tensorflow_model_server`` exports on its Prometheus endpoint: the one list.

The dashboard (``k8s/base/dashboards/grafana-dashboard.json``) and the rules
(``k8s/monitoring/rules.yaml``) may use these names and nothing else from TF Serving; a test
parses every expression they hold and checks it. Each entry names the upstream source file that
registers the metric (tensorflow/serving's ``tensorflow_serving/...`` or TensorFlow's
``tensorflow/...``), its type and its label names.

Naming, from tensorflow/serving's ``tensorflow_serving/util/prometheus_exporter.cc``: every
character of the TF metric name outside ``[a-zA-Z0-9_]`` becomes ``:``
(``/tensorflow/serving/request_count`` -> ``:tensorflow:serving:request_count``). A TF
``Sampler`` is written as a Prometheus histogram (``_bucket{le}``, ``_sum``, ``_count``), a
``Counter`` as a counter, an int64 ``Gauge`` as a gauge. ``PercentileSampler`` metrics (the v1
batching ``padding_size``, ``input_batch_size``, ``processed_batch_size``, ``batch_delay_us`` of
``batch_resource_base.cc``) and string gauges go through the exporter's scalar path, which
prints an int64 value they do not have, so they are left out: nothing can be built on them.

``local_server`` says whether the local server (``serving/model_server``) emits the metric too.
Where it does not, a panel or rule built on it is empty against the local server and is
labelled "TF Serving only". The local server's one metric of its own,
``imdb_local_batching_queued_tasks``, is outside TF Serving's namespace and not in this list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Source files, as paths in their repositories.
_UTIL = "tensorflow/serving: tensorflow_serving/servables/tensorflow/util.cc"
_WARMUP = "tensorflow/serving: tensorflow_serving/servables/tensorflow/saved_model_warmup_util.cc"
_LOADER = "tensorflow/tensorflow: tensorflow/cc/saved_model/loader.cc"
_BATCHING_SESSION = "tensorflow/serving: tensorflow_serving/batching/batching_session.cc"
_BATCHING_UTIL = "tensorflow/serving: tensorflow_serving/batching/batching_util.h"
_BATCH_OP = "tensorflow/tensorflow: tensorflow/core/kernels/batching_util/batch_resource_base.cc"
# The Prometheus types the exporter writes.
KINDS = ("counter", "gauge", "histogram")
# Series a histogram is written as, after its name.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def prometheus_name(tf_name: str) -> str:
    """The name TF Serving's Prometheus exporter gives a TF metric name."""
    name = re.sub(r"[^a-zA-Z0-9_]", ":", tf_name)
    return f"_{name}" if name[:1].isdigit() else name


@dataclass(frozen=True)
class TFServingMetric:
    """One exported metric.

    Attributes:
        tf_name: the name TF registers (``/tensorflow/serving/request_count``).
        kind: "counter", "gauge" or "histogram", as the exporter's ``# TYPE`` line says.
        labels: label names, in registration order.
        source: the upstream file that registers it.
        local_server: whether the local server emits it too (same name, labels and units).
        description: what it measures, in TF's words where they are clear.
    """

    tf_name: str
    kind: str
    labels: tuple[str, ...]
    source: str
    local_server: bool
    description: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.tf_name}: kind {self.kind!r} is not one of {KINDS}")
        if not self.tf_name.startswith("/tensorflow/"):
            raise ValueError(f"{self.tf_name}: a TF metric name starts with /tensorflow/")

    @property
    def name(self) -> str:
        """The Prometheus metric name."""
        return prometheus_name(self.tf_name)

    @property
    def series(self) -> tuple[str, ...]:
        """The names of the series the exporter writes for it."""
        if self.kind == "histogram":
            return tuple(self.name + suffix for suffix in HISTOGRAM_SUFFIXES)
        return (self.name,)


_METRICS = (
    TFServingMetric(
        "/tensorflow/serving/request_count",
        "counter",
        ("model_name", "status"),
        _UTIL,
        True,
        "Inference requests by model and status code name.",
    ),
    TFServingMetric(
        "/tensorflow/serving/request_latency",
        "histogram",
        ("model_name", "API", "entrypoint"),
        _UTIL,
        True,
        "Wall time of a request in microseconds, by API and entrypoint (REST, GRPC).",
    ),
    TFServingMetric(
        "/tensorflow/serving/runtime_latency",
        "histogram",
        ("model_name", "API", "runtime"),
        _UTIL,
        True,
        "Wall time of the TensorFlow runtime inside a request, in microseconds.",
    ),
    TFServingMetric(
        "/tensorflow/serving/request_example_counts",
        "histogram",
        ("model",),
        _UTIL,
        False,
        "tf.Examples per classify/regress request.",
    ),
    TFServingMetric(
        "/tensorflow/serving/request_example_count_total",
        "counter",
        ("model",),
        _UTIL,
        False,
        "tf.Examples received by classify/regress.",
    ),
    TFServingMetric(
        "/tensorflow/serving/model_warmup_latency",
        "histogram",
        ("model_path", "status"),
        _WARMUP,
        True,
        "Wall time of a version's warmup in microseconds, by outcome.",
    ),
    TFServingMetric(
        "/tensorflow/cc/saved_model/load_attempt_count",
        "counter",
        ("model_path", "status"),
        _LOADER,
        True,
        "SavedModel loads by outcome (status success or fail).",
    ),
    TFServingMetric(
        "/tensorflow/cc/saved_model/load_latency",
        "counter",
        ("model_path",),
        _LOADER,
        False,
        "Microseconds spent loading SavedModels that loaded.",
    ),
    TFServingMetric(
        "/tensorflow/cc/saved_model/load_latency_by_stage",
        "histogram",
        ("model_path", "stage"),
        _LOADER,
        False,
        "Load wall time per stage (restore, init op, ...) in microseconds.",
    ),
    # Server-side batching (--enable_batching, the batching_parameters_file): BatchingSession.
    TFServingMetric(
        "/tensorflow/serving/batching_session/queuing_latency",
        "histogram",
        ("thread_pool_name",),
        _BATCHING_SESSION,
        False,
        "Wall time a task waits in the batch queue, in microseconds.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching_session/input_batch_size",
        "histogram",
        (),
        _BATCHING_UTIL,
        False,
        "Batch size of each request entering the batcher.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching_session/processed_batch_size",
        "histogram",
        (),
        _BATCHING_UTIL,
        False,
        "Size of each batch run, after padding to an allowed batch size.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching_session/padding_size",
        "histogram",
        ("execution_batch_size",),
        _BATCHING_UTIL,
        False,
        "Padding rows added to each batch.",
    ),
    # In-graph batching (a BatchFunction op in the model; this model has none).
    TFServingMetric(
        "/tensorflow/serving/batching/batch_size",
        "histogram",
        ("model_name", "op_name"),
        _BATCH_OP,
        False,
        "Batch size without padding, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/input_batch_size_v2",
        "histogram",
        ("model_name", "op_name"),
        _BATCH_OP,
        False,
        "Batch size of the inputs, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/padding_size_v2",
        "histogram",
        ("model_name", "execution_batch_size", "op_name"),
        _BATCH_OP,
        False,
        "Padding per batch, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/processed_batch_size_v2",
        "counter",
        ("model_name", "op_name", "batch_size"),
        _BATCH_OP,
        False,
        "Batches processed, by batch size, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/batch_delay_us_v2",
        "histogram",
        ("model_name", "op_name", "processed_batch_size"),
        _BATCH_OP,
        False,
        "Batching delay of inputs in microseconds, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/costs",
        "histogram",
        ("model_name", "processed_size", "cost_type"),
        _BATCH_OP,
        False,
        "Batch costs in microseconds, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/batch_timeout_micros",
        "gauge",
        ("model_name", "op_name"),
        _BATCH_OP,
        False,
        "Configured batch timeout, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/max_batch_size",
        "gauge",
        ("model_name", "op_name"),
        _BATCH_OP,
        False,
        "Configured maximum batch size, BatchFunction op.",
    ),
    TFServingMetric(
        "/tensorflow/serving/batching/max_enqueued_batches",
        "gauge",
        ("model_name", "op_name"),
        _BATCH_OP,
        False,
        "Configured maximum of enqueued batches, BatchFunction op.",
    ),
)
# Prometheus name -> metric.
METRICS: dict[str, TFServingMetric] = {metric.name: metric for metric in _METRICS}
# Series name (histograms: _bucket, _sum, _count) -> its metric.
SERIES: dict[str, TFServingMetric] = {
    series: metric for metric in _METRICS for series in metric.series
}

# The names the local server and the rules import.
REQUEST_COUNT = prometheus_name("/tensorflow/serving/request_count")
REQUEST_LATENCY = prometheus_name("/tensorflow/serving/request_latency")
RUNTIME_LATENCY = prometheus_name("/tensorflow/serving/runtime_latency")
MODEL_WARMUP_LATENCY = prometheus_name("/tensorflow/serving/model_warmup_latency")
LOAD_ATTEMPT_COUNT = prometheus_name("/tensorflow/cc/saved_model/load_attempt_count")

# kube-state-metrics series the Kubernetes alerts use (kubernetes/kube-state-metrics,
# docs/metrics/workload/*.md): not TF Serving's, listed so that the same check covers them.
_KSM_DOCS = "kubernetes/kube-state-metrics: docs/metrics/workload/"
KUBE_STATE_METRICS: dict[str, str] = {
    "kube_deployment_spec_replicas": _KSM_DOCS + "deployment-metrics.md",
    "kube_deployment_status_replicas_available": _KSM_DOCS + "deployment-metrics.md",
    "kube_pod_container_status_restarts_total": _KSM_DOCS + "pod-metrics.md",
    "kube_horizontalpodautoscaler_spec_max_replicas": _KSM_DOCS
    + "horizontalpodautoscaler-metrics.md",
    "kube_horizontalpodautoscaler_status_current_replicas": _KSM_DOCS
    + "horizontalpodautoscaler-metrics.md",
}

# PromQL words that look like metric names but are not: functions, aggregations, keywords.
_PROMQL_WORDS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bool",
        "bottomk",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "delta",
        "deriv",
        "exp",
        "floor",
        "group",
        "group_left",
        "group_right",
        "histogram_quantile",
        "holt_winters",
        "hour",
        "idelta",
        "ignoring",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "minute",
        "month",
        "offset",
        "on",
        "predict_linear",
        "present_over_time",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stddev_over_time",
        "stdvar",
        "stdvar_over_time",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
        "year",
        "by",
        "without",
        "and",
        "or",
        "unless",
        "inf",
        "nan",
    ]
)
# Of those, the words that are never metric names, wherever they stand.
_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
    ]
)


def metric_names(expression: str) -> set[str]:
    """The metric (or recording rule) names a PromQL expression reads.

    Label matchers (``{...}``), grouping lists (``by (...)``, ``on (...)``, ...), range and
    offset durations (``[5m]``), strings and numbers are skipped, and so are function and
    keyword names.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1 ", text)
    names = set()
    for match in re.finditer(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])", text):
        word = match.group(1)
        following = text[match.end() :].lstrip()
        # A function or an aggregation is followed by its arguments or by its grouping.
        called = following.startswith("(") or re.match(r"(by|without)\b", following)
        if word.lower() in _KEYWORDS or (word.lower() in _PROMQL_WORDS and called):
            continue
        names.add(word)
    return names


def unknown_names(expression: str, recorded: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """The names ``expression`` reads that are neither TF Serving's series, kube-state-metrics'
    nor one of ``recorded`` (the recording rules defined beside it)."""
    return {
        name
        for name in metric_names(expression)
        if name not in SERIES and name not in KUBE_STATE_METRICS and name not in recorded
    }
