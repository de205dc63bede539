"""The one list of TF Serving's exported metrics, the PromQL name reader the monitoring tests use,
and the runbook URL writer of the rule generator."""

from __future__ import annotations

import pytest

from serving import contract, monitoring_rules, tf_serving_metrics
from serving.model_server import metrics as local_metrics
from serving.tf_serving_metrics import METRICS, SERIES, TFServingMetric, metric_names


def test_names_follow_the_prometheus_exporters_rule():
    assert tf_serving_metrics.prometheus_name("/tensorflow/serving/request_count") == (
        ":tensorflow:serving:request_count"
    )
    assert tf_serving_metrics.prometheus_name("/tensorflow/cc/saved_model/load_attempt_count") == (
        ":tensorflow:cc:saved_model:load_attempt_count"
    )
    assert tf_serving_metrics.prometheus_name("9/x-y") == "_9:x:y"


def test_every_entry_has_a_type_labels_and_a_source():
    for name, metric in METRICS.items():
        assert name.startswith(":tensorflow:"), name
        assert metric.kind in tf_serving_metrics.KINDS
        assert len(set(metric.labels)) == len(metric.labels), name
        repository, _, path = metric.source.partition(": ")
        assert repository in ("tensorflow/serving", "tensorflow/tensorflow"), name
        assert path.startswith(("tensorflow_serving/", "tensorflow/")), name
        assert path.endswith((".cc", ".h")), name
        assert metric.description, name
    assert len(METRICS) == len({m.tf_name for m in METRICS.values()})


def test_histograms_are_written_as_bucket_sum_and_count():
    latency = METRICS[":tensorflow:serving:request_latency"]
    assert latency.series == tuple(
        f":tensorflow:serving:request_latency{suffix}" for suffix in ("_bucket", "_sum", "_count")
    )
    assert METRICS[contract.REQUEST_COUNT_METRIC].series == (contract.REQUEST_COUNT_METRIC,)
    assert SERIES[":tensorflow:serving:request_latency_bucket"] is latency
    assert ":tensorflow:serving:request_latency" not in SERIES


def test_a_bad_entry_is_refused_with_its_name():
    with pytest.raises(ValueError, match="/tensorflow/x: kind 'summary'"):
        TFServingMetric("/tensorflow/x", "summary", (), "s", False, "d")
    with pytest.raises(ValueError, match="starts with /tensorflow/"):
        TFServingMetric("/other/x", "counter", (), "s", False, "d")


def test_the_local_server_uses_the_lists_names():
    for name in (
        local_metrics.REQUEST_COUNT,
        local_metrics.REQUEST_LATENCY,
        local_metrics.RUNTIME_LATENCY,
        local_metrics.LOAD_ATTEMPT_COUNT,
        local_metrics.WARMUP_LATENCY,
    ):
        assert METRICS[name].local_server, name
    # Its own gauge is outside TF Serving's namespace and not in the list.
    assert not local_metrics.LOCAL_BATCH_QUEUED_TASKS.startswith(":tensorflow:")
    assert local_metrics.LOCAL_BATCH_QUEUED_TASKS not in SERIES


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        (
            'sum by (model_name) (rate(:tensorflow:serving:request_count{status!="OK"}[5m]))'
            " / sum by (model_name) (rate(:tensorflow:serving:request_count[5m]))",
            {":tensorflow:serving:request_count"},
        ),
        (
            "histogram_quantile(0.99, sum by (le, API) (rate(x_bucket[5m]))) / 1000 > bool 1e3",
            {"x_bucket"},
        ),
        (
            'a{namespace="n", deployment=~"rate(.*)"} < on (pod) group_left(extra) b'
            " unless ignoring(pod) c offset 5m",
            {"a", "b", "c"},
        ),
        ("imdb:error_ratio:rate5m > 0.01", {"imdb:error_ratio:rate5m"}),
        ("sum without (instance) (increase(kube_x_total[30m])) > 2", {"kube_x_total"}),
        ("vector(1) and time() - timestamp(up) > 60", {"up"}),
    ],
)
def test_metric_names_reads_identifiers_not_functions_labels_or_durations(expression, names):
    assert metric_names(expression) == names


def test_unknown_names_accepts_tf_serving_kube_state_metrics_and_recorded_names():
    expression = (
        "sum(rate(:tensorflow:serving:batching_session:queuing_latency_count[5m]))"
        " + kube_deployment_spec_replicas + imdb:mine + :tensorflow:serving:batching:queued_tasks"
    )
    assert tf_serving_metrics.unknown_names(expression, {"imdb:mine"}) == {
        ":tensorflow:serving:batching:queued_tasks"
    }


def test_runbook_urls_are_rewritten_to_the_base_in_either_form():
    text = (
        "        annotations:\n"
        "          runbook_url: docs/operations.md#modelwarmupfailed\n"
        "          runbook_url:\n"
        "            https://old.example.com/ops.md#modelserverpodsnotready\n"
        "          summary: x\n"
    )
    written = monitoring_rules.with_runbook_urls(text, "https://docs.example.com/run.md")
    assert written == (
        "        annotations:\n"
        "          runbook_url:\n"
        "            https://docs.example.com/run.md#modelwarmupfailed\n"
        "          runbook_url:\n"
        "            https://docs.example.com/run.md#modelserverpodsnotready\n"
        "          summary: x\n"
    )
    assert monitoring_rules.with_runbook_urls(written, "https://docs.example.com/run.md") == (
        written
    )


@pytest.mark.parametrize("base", ["docs/operations.md", "https://x.example.com/a#b", "ftp://x"])
def test_a_bad_runbook_base_is_refused(base):
    with pytest.raises(ValueError, match="runbook base URL must be an http"):
        monitoring_rules.with_runbook_urls("runbook_url: a#b\n", base)
