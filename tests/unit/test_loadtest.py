"""The load test's arithmetic and input checks (no server needed)."""

from __future__ import annotations

import gzip

import pytest

from serving.loadtest import (
    LoadTestError,
    StepResult,
    check_grpc_target,
    check_rest_url,
    latency_summary,
    max_sustainable_rates,
    open_loop_schedule,
    read_reviews,
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


def test_max_sustainable_rate_is_the_best_error_free_step_within_the_slo():
    steps = [step(100, 5), step(200, 9), step(400, 25), step(300, 8, {"UNAVAILABLE": 1})]
    (best,) = max_sustainable_rates(steps, slo_p99_ms=20)
    assert (best["requests_per_second"], best["p99_ms"]) == (200, 9)
