"""Canary against stable: the same reference reviews to both labels, and the verdict.

``compare`` measures (label agreement, probability shift, p99 latency, failed requests, and the
servers' own request counters); ``Comparison.checks`` judges the measures against
``Thresholds``, which the canary verb's flags override.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from serving.client import RequestError, RestClient
from serving.contract import (
    METRICS_PATH,
    MODEL_NAME,
    REQUEST_COUNT_METRIC,
    REQUEST_TIMEOUT_SECONDS,
)
from serving.loadtest import percentile
from serving.rollout.state import CANARY, STABLE

# Latency samples per label in a canary comparison, at least.
MIN_REQUESTS_PER_LABEL = 300


@dataclass(frozen=True)
class Thresholds:
    """The limits a canary must stay within to pass."""

    # Defaults that pass an honest retrain and fail a broken model: two full-data MLPs (20k and
    # 5k n-gram features) agreed on 96.9% of the shipped reviews with a mean shift of 0.051,
    # where an inverted or broken model lands near 50% and 0.5.
    min_agreement: float = 0.90
    max_mean_shift: float = 0.10
    # Canary p99 may exceed stable's by this factor, or by max_p99_slack_ms, whichever is larger
    # (one noisy millisecond on a fast model must not fail a canary).
    max_p99_ratio: float = 1.5
    max_p99_slack_ms: float = 5.0
    max_error_rate: float = 0.0
    # Non-OK requests in the servers' own counters during the comparison, over all their traffic
    # (TF Serving counts per model, not per version): real clients' bad requests count too.
    max_server_error_rate: float = 0.01


@dataclass(frozen=True)
class Comparison:
    """What ``compare`` measured."""

    reviews: int  # distinct reference reviews (agreement and shift are over these)
    requests: int  # requests per label (latency and errors are over these)
    agreement: float
    mean_shift: float
    max_shift: float
    p99_ms: dict[str, float]
    errors: dict[str, int]
    # (non-OK, all) requests in the servers' metrics during the comparison; None without metrics.
    server_requests: tuple[int, int] | None

    def checks(self, limits: Thresholds) -> list[tuple[str, bool]]:
        """Each check as (a line for the verdict, passed)."""
        stable_p99, canary_p99 = self.p99_ms[STABLE], self.p99_ms[CANARY]
        allowed_p99 = max(stable_p99 * limits.max_p99_ratio, stable_p99 + limits.max_p99_slack_ms)
        error_rate = self.errors[CANARY] / max(self.requests, 1)
        checks = [
            (
                f"label agreement {self.agreement:.1%} (minimum {limits.min_agreement:.1%})",
                self.agreement >= limits.min_agreement,
            ),
            (
                f"mean probability shift {self.mean_shift:.4f} (maximum {limits.max_mean_shift}; "
                f"largest {self.max_shift:.4f})",
                self.mean_shift <= limits.max_mean_shift,
            ),
            (
                f"p99 latency canary {canary_p99:.1f} ms vs stable {stable_p99:.1f} ms "
                f"(maximum {allowed_p99:.1f} ms)",
                canary_p99 <= allowed_p99,
            ),
            (
                f"canary errors {self.errors[CANARY]}/{self.requests} requests "
                f"(maximum rate {limits.max_error_rate:.1%}), stable errors {self.errors[STABLE]}",
                error_rate <= limits.max_error_rate,
            ),
        ]
        if self.server_requests is not None:
            non_ok, total = self.server_requests
            rate = non_ok / max(total, 1)
            checks.append(
                (
                    f"servers' metrics during the comparison: {non_ok} non-OK of {total} "
                    f"requests ({rate:.1%}; maximum {limits.max_server_error_rate:.1%})",
                    rate <= limits.max_server_error_rate,
                )
            )
        return checks


def server_request_counts(url: str) -> tuple[int, int] | None:
    """(non-OK, all) of one server's ``REQUEST_COUNT_METRIC`` over every model (TF Serving
    counts per model, not per version), or None when it exposes no metrics."""
    import requests
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = requests.get(url.rstrip("/") + METRICS_PATH, timeout=REQUEST_TIMEOUT_SECONDS)
    except requests.RequestException:
        return None
    if response.status_code != 200:
        return None
    non_ok = total = 0
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == REQUEST_COUNT_METRIC:
                total += int(sample.value)
                if sample.labels.get("status", "OK") not in ("OK", ""):
                    non_ok += int(sample.value)
    return non_ok, total


def compare(
    urls: Sequence[str],
    reviews: Sequence[str],
    model_name: str = MODEL_NAME,
    min_requests: int = MIN_REQUESTS_PER_LABEL,
) -> Comparison:
    """Sends every review, one per request, to ``stable`` and ``canary`` in turn, spread over
    the servers; the two labels see the same load at the same time. A short reference set is
    sent again until each label has ``min_requests`` latencies (a p99 of 32 samples would be
    their maximum, one noisy request); agreement counts each review once."""
    before = [server_request_counts(url) for url in urls]
    latencies: dict[str, list[float]] = {STABLE: [], CANARY: []}
    errors = {STABLE: 0, CANARY: 0}
    shifts, agree = [], 0
    clients = [RestClient(url, model_name, timeout=REQUEST_TIMEOUT_SECONDS) for url in urls]
    try:
        rounds = max(1, math.ceil(min_requests / max(len(reviews), 1)))
        for index, review in enumerate(list(reviews) * rounds):
            first_round = index < len(reviews)
            client = clients[index % len(clients)]
            answers = {}
            order = (STABLE, CANARY) if index % 2 == 0 else (CANARY, STABLE)
            for label in order:
                started = time.perf_counter()
                try:
                    answers[label] = client.predict([review], label=label)[0]
                except RequestError:
                    errors[label] += 1
                    continue
                latencies[label].append((time.perf_counter() - started) * 1000)
            if len(answers) == 2 and first_round:
                agree += answers[STABLE].label == answers[CANARY].label
                shifts.append(abs(answers[STABLE].probability - answers[CANARY].probability))
    finally:
        for client in clients:
            client.close()
    after = [server_request_counts(url) for url in urls]
    server_requests = None
    if all(counts is not None for counts in before + after):
        pairs = list(zip(after, before, strict=True))
        server_requests = (
            sum(a[0] - b[0] for a, b in pairs),  # type: ignore[index]
            sum(a[1] - b[1] for a, b in pairs),  # type: ignore[index]
        )
    return Comparison(
        reviews=len(reviews),
        requests=len(reviews) * rounds,
        agreement=agree / max(len(shifts), 1),
        mean_shift=sum(shifts) / max(len(shifts), 1),
        max_shift=max(shifts, default=0.0),
        p99_ms={label: percentile(values, 0.99) for label, values in latencies.items()},
        errors=errors,
        server_requests=server_requests,
    )
