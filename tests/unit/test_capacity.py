"""The capacity plan's arithmetic."""

from __future__ import annotations

import json

import pytest
import yaml

from serving.capacity import (
    CapacityError,
    CapacityTarget,
    batching_config,
    hpa_patch,
    plan_capacity,
)


def step(mode, rps, p99, size=1, errors=None, transport="gRPC"):
    """A step of a load-test report (results.json) that ran for 10 s."""
    return {
        "transport": transport,
        "mode": mode,
        "reviews_per_request": size,
        "concurrency": 16 if mode == "closed" else None,
        "target_rate": rps if mode == "open" else None,
        "seconds": 10.0,
        "requests": 10 * rps,
        "errors": errors or {},
        "requests_per_second": rps,
        "reviews_per_second": rps * size,
        "latency_ms": {"p99": p99},
    }


STEPS = [
    step("closed", 1200, 15),
    step("closed", 1500, 35),  # over the SLO
    step("open", 800, 8),
    step("open", 1000, 12),
    step("open", 1300, 19, errors={"UNAVAILABLE": 14}),  # over the 0.001 error budget
    step("open", 5000, 5, size=32),  # another request size
]


def test_plan_uses_the_open_loop_rate_and_keeps_a_pod_in_reserve():
    plan = plan_capacity(
        STEPS, CapacityTarget(target_rps=2000, reviews_per_request=1, slo_p99_ms=20)
    )
    assert plan.per_replica_rps == 1000
    # 2000 / (1000 x 0.65) = 3.08 -> 4 replicas for the peak, +1 for a lost pod.
    assert (plan.replicas_for_peak, plan.min_replicas, plan.max_replicas) == (4, 5, 10)
    assert plan.hpa_cpu_target_percent == 65
    assert plan.batching["num_batch_threads"] == 2 and plan.batching["batch_timeout_micros"] == 1000


def test_measured_replicas_divide_the_capacity_and_small_targets_keep_two_pods():
    target = CapacityTarget(
        target_rps=100, reviews_per_request=1, slo_p99_ms=20, measured_replicas=4
    )
    plan = plan_capacity(STEPS, target)
    assert plan.per_replica_rps == 250 and plan.min_replicas == 2


def test_closed_loop_steps_plan_when_there_is_no_open_loop():
    closed_only = [s for s in STEPS if s["mode"] == "closed"]
    plan = plan_capacity(closed_only, CapacityTarget(780, 1, 20))
    assert plan.per_replica_rps == 1200 and plan.replicas_for_peak == 1
    assert "closed-loop step, 16 clients" in plan.source


def test_no_usable_step_is_an_error_that_says_what_to_measure():
    with pytest.raises(CapacityError, match="--batch-sizes"):
        plan_capacity(STEPS, CapacityTarget(100, reviews_per_request=8, slo_p99_ms=20))


def test_the_outputs_are_a_valid_hpa_patch_and_batching_file():
    from serving.model_server.batching import BatchingOptions

    plan = plan_capacity(STEPS, CapacityTarget(2000, 32, 20))
    patch = yaml.safe_load(hpa_patch(plan))
    assert (
        patch["kind"] == "HorizontalPodAutoscaler" and patch["metadata"]["name"] == "imdb-sentiment"
    )
    assert patch["spec"]["minReplicas"] == plan.min_replicas
    options = BatchingOptions.from_text(batching_config(plan))
    assert options.max_batch_size == 512 and options.batch_timeout_micros == 0


def test_the_capacity_command_judges_steps_with_the_reports_error_budget(tmp_path, capsys):
    """`python -m serving capacity` plans from the steps that held in the load test: with the
    error budget recorded in its report, not a stricter or looser one of its own."""
    from serving.__main__ import main

    report = tmp_path / "results.json"
    within_one_percent = step("open", 1000, 12, errors={"UNAVAILABLE": 50})  # 0.5% of requests
    report.write_text(
        json.dumps(
            {"plan": {"slo_p99_ms": 20, "error_budget": 0.01}, "steps": [within_one_percent]}
        )
    )
    argv = ["capacity", "--results", str(report), "--target-rps", "500", "--slo-p99-ms", "20"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "per replica: 1,000 requests/s" in capsys.readouterr().out
    # The same step with the default budget (0.001): over it, so nothing to plan from.
    report.write_text(json.dumps({"plan": {"slo_p99_ms": 20}, "steps": [within_one_percent]}))
    assert main(argv) == 1
    assert "error budget" in capsys.readouterr().err
