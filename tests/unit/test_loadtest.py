"""The load test's arithmetic and input checks (no server needed)."""

from __future__ import annotations

import asyncio
import gzip
from dataclasses import asdict

import pytest

from serving.capacity import CapacityError, CapacityTarget, plan_capacity
from serving.loadtest import (
    CLIENT_SATURATED,
    LoadTest,
    LoadTestError,
    Plan,
    StepResult,
    check_grpc_target,
    check_rest_url,
    latency_summary,
    max_sustainable_rates,
    open_loop_schedule,
    read_reviews,
    step_holds,
    write_report,
)


def test_percentiles_are_nearest_rank_latencies_in_milliseconds():
    latencies = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1000 ms
    assert latency_summary(latencies) == {
        "p50": pytest.approx(500.0),
        "p90": pytest.approx(900.0),
        "p99": pytest.approx(990.0),
        "p99.9": pytest.approx(999.0),
    }
    assert latency_summary([0.004])["p99.9"] == pytest.approx(4.0)  # one sample: itself
    assert all(value != value for value in latency_summary([]).values())  # NaN when empty


def test_open_loop_sends_at_a_constant_rate_within_the_bounds():
    assert open_loop_schedule(rate=4, seconds=1, max_requests=100) == [0, 0.25, 0.5, 0.75]
    assert len(open_loop_schedule(rate=1000, seconds=10, max_requests=50)) == 50


@pytest.mark.parametrize("url", ["localhost:8501", "ftp://host:8501", "http://", "8501"])
def test_malformed_rest_urls_are_refused(url):
    with pytest.raises(LoadTestError, match="--rest-url must look like"):
        check_rest_url(url)


@pytest.mark.parametrize("target", ["localhost", "http://host:8500", "host:port", ":8500"])
def test_malformed_grpc_targets_are_refused(target):
    with pytest.raises(LoadTestError, match="--grpc-target must look like"):
        check_grpc_target(target)


def test_reviews_come_from_text_csv_or_the_shipped_set(tmp_path):
    text = tmp_path / "reviews.txt"
    text.write_text("good film\n\n  bad film  \n")
    assert read_reviews(text) == ["good film", "bad film"]
    table = tmp_path / "reviews.csv.gz"
    with gzip.open(table, "wt") as file:
        file.write('review,sentiment\n"great, really",positive\ndull,negative\n')
    assert read_reviews(table) == ["great, really", "dull"]
    assert len(read_reviews(None)) >= 20
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(LoadTestError, match="no reviews"):
        read_reviews(tmp_path / "empty.txt")
    with pytest.raises(LoadTestError, match="cannot read reviews"):
        read_reviews(tmp_path / "missing.txt")


def step(rate: float, p99: float, errors: dict | None = None) -> StepResult:
    return StepResult(
        "gRPC", "open", 1, None, rate, 1.0, int(rate), errors or {}, rate, rate, {"p99": p99}
    )


def test_max_sustainable_rate_is_the_best_step_within_the_slo_and_the_error_budget():
    steps = [step(100, 5), step(200, 9), step(400, 25), step(300, 8, {"UNAVAILABLE": 1})]
    (best,) = max_sustainable_rates(steps, slo_p99_ms=20, error_budget=0.001)
    assert (best["requests_per_second"], best["p99_ms"]) == (200, 9)


# Steps of 10,000 requests each, judged with Plan()'s SLO of 20 ms and its budget of 0.001
# (10 errors): on both sides of each limit.
SLO_P99_MS = Plan().slo_p99_ms
JUDGED_STEPS = {
    "clean": (12.0, {}, True),
    "errors at the budget": (12.0, {"UNAVAILABLE": 9, CLIENT_SATURATED: 1}, True),
    "errors over the budget": (12.0, {"UNAVAILABLE": 11}, False),
    "p99 at the SLO": (SLO_P99_MS, {}, True),
    "p99 over the SLO": (SLO_P99_MS + 0.1, {}, False),
}


def judged_step(p99: float, errors: dict[str, int]) -> StepResult:
    latency = {"p50": p99 / 2, "p90": p99 * 0.8, "p99": p99, "p99.9": p99 * 1.5}
    return StepResult("gRPC", "open", 1, None, 1000.0, 10.0, 10_000, errors, 999, 999, latency)


def ramp_holds(step_result: StepResult) -> bool:
    """Whether the open-loop ramp steps up after ``step_result`` (held) or runs the same rate
    once more (broke)."""
    plan = Plan(open_loop=True, start_rate=100, rate_factor=2, max_rate=150)
    load_test = LoadTest([], ["a review"], plan)
    rates: list[float] = []

    async def open_step(transport, size, rate):
        rates.append(rate)
        return step_result

    load_test.open_step = open_step
    asyncio.run(load_test.open_steps(None, 1))
    assert rates in ([100], [100, 100])
    return rates == [100]


def report_holds(step_result: StepResult, out) -> bool:
    document = write_report([step_result], Plan(open_loop=True), {}, out)
    return bool(document["max_sustainable"])


def capacity_holds(step_result: StepResult) -> bool:
    target = CapacityTarget(target_rps=100, reviews_per_request=1, slo_p99_ms=SLO_P99_MS)
    try:
        plan_capacity([asdict(step_result)], target)
    except CapacityError:
        return False
    return True


@pytest.mark.parametrize("case", JUDGED_STEPS)
def test_a_step_is_judged_by_the_same_rule_in_the_ramp_the_report_and_the_capacity_plan(
    case, tmp_path
):
    p99, errors, expected = JUDGED_STEPS[case]
    judged = judged_step(p99, errors)
    verdicts = {
        "rule": step_holds(judged, SLO_P99_MS, Plan().error_budget),
        "ramp": ramp_holds(judged),
        "report": report_holds(judged, tmp_path),
        "capacity plan": capacity_holds(judged),
    }
    assert verdicts == dict.fromkeys(verdicts, expected)
