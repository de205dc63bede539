"""Load test of any TF Serving endpoint: REST and gRPC, closed and open loop, real review text.

``python -m serving loadtest --rest-url http://host:8501 --grpc-target host:8500``

- **Closed loop** (``--concurrency 1,4,16 --batch-sizes 1,8,32``): each of N clients sends a
  request, waits for the answer, and sends the next, for ``--duration`` seconds per step.
- **Open loop** (``--open-loop``): requests are *scheduled* at a constant rate, whatever the
  server does, and each latency is measured from the scheduled send time, so a slow server
  cannot hide its queueing (no coordinated omission). The rate steps up by ``--rate-factor``
  until a step no longer holds (twice in a row at one rate: a breaking step is repeated once):
  the best rate that held is the maximum sustainable rate.
- A step **holds** when its p99 is within ``--slo-p99-ms`` and its errors are at most
  ``--error-budget`` of its requests (``step_holds``: the one rule for the ramp, the report's
  maximum sustainable rate and the capacity plan, ``serving/capacity.py``).

Per step: requests/s, reviews/s, p50/p90/p99/p99.9 latency and errors by status (gRPC code or
HTTP status). Writes ``results.json``, ``results.md`` and ``latency.png`` to ``--out``; prints a
progress line per second. It sends requests only to the endpoints it is given, and stops by
itself: every step is bounded by time and by ``--max-requests``.

One asyncio loop drives all clients (aiohttp for REST, grpcio's asyncio API for gRPC), so one
core can keep many requests in flight; on 2 cores the generator shares the machine with a
local server, which the report states.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from serving.contract import (
    INPUT_KEY,
    LATENCY_SLO_P99_MS,
    MAX_MESSAGE_BYTES,
    MODEL_NAME,
    REQUEST_TIMEOUT_SECONDS,
    SIGNATURE_NAME,
)

# Reviews shipped with the project for when no --reviews file is given (written for the
# project: no IMDB text).
DEFAULT_REVIEWS = Path(__file__).parent / "data" / "loadtest_reviews.txt"
# Latency percentiles reported for every step.
PERCENTILES = (50, 90, 99, 99.9)
# Requests that may be in flight at once in the open loop; beyond it the generator itself is
# the bottleneck, and those requests count as errors ("client saturated").
MAX_IN_FLIGHT = 2048
CLIENT_SATURATED = "client saturated"
# Share of a step's requests that may fail while the step still holds: 1 in 1,000.
DEFAULT_ERROR_BUDGET = 0.001


class LoadTestError(Exception):
    """The load test cannot run: a malformed URL, an unreachable endpoint, no reviews."""


@dataclass
class StepResult:
    """What one step measured."""

    transport: str
    mode: str  # "closed" or "open"
    reviews_per_request: int
    concurrency: int | None  # closed loop
    target_rate: float | None  # open loop: requests/s scheduled
    seconds: float
    requests: int
    errors: dict[str, int]
    requests_per_second: float
    reviews_per_second: float
    latency_ms: dict[str, float]

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @classmethod
    def from_report(cls, step: dict) -> StepResult:
        """A step as ``write_report`` stored it in ``results.json``.

        Raises:
            ValueError: a field is missing.
        """
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if name not in step]
        if missing:
            raise ValueError(f"a load-test step without {', '.join(missing)}: {step}")
        return cls(**{name: step[name] for name in names})


def step_holds(step: StepResult, slo_p99_ms: float, error_budget: float) -> bool:
    """The one rule for "a step holds", used by the open-loop ramp, the report's maximum
    sustainable rates and the capacity plan: its p99 is within the SLO and its errors (every
    outcome but OK, "client saturated" and timeouts included) are at most ``error_budget`` of
    its requests.

    The budget is explicit (``--error-budget``, default ``DEFAULT_ERROR_BUDGET``) rather than
    zero: a production SLO allows a stated share of failures, and one 503 in 100,000 requests
    should not move the capacity plan to a lower rate. A budget of 0 asks for error-free steps.
    """
    return step.latency_ms["p99"] <= slo_p99_ms and step.error_count <= error_budget * step.requests


@dataclass
class Recorder:
    """Latencies and outcomes of one step."""

    latencies: list[float] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)

    def record(self, seconds: float, outcome: str) -> None:
        self.latencies.append(seconds)
        self.outcomes[outcome] += 1


def percentile(values: Iterable[float], fraction: float) -> float:
    """The nearest-rank percentile (a value that was measured); NaN when there is none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(1, math.ceil(fraction * len(ordered) - 1e-9)) - 1]


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """Milliseconds at each of ``PERCENTILES`` (nearest rank: a latency that was measured)."""
    ordered = sorted(latencies)  # sorted once: sorting a sorted list again is linear
    return {f"p{p:g}": percentile(ordered, p / 100) * 1000 for p in PERCENTILES}


def open_loop_schedule(rate: float, seconds: float, max_requests: int) -> list[float]:
    """Send times (seconds from the step's start) of a constant arrival rate."""
    count = min(max_requests, int(rate * seconds))
    return [index / rate for index in range(count)]


def read_reviews(path: str | Path | None) -> list[str]:
    """Reviews from a text file (one per line) or a CSV with a ``review`` column (plain/.gz)."""
    path = Path(path) if path else DEFAULT_REVIEWS
    try:
        if ".csv" in path.suffixes:
            import pandas as pd

            frame = pd.read_csv(path)
            column = "review" if "review" in frame.columns else frame.columns[0]
            reviews = frame[column].dropna().astype(str).tolist()
        else:
            reviews = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise LoadTestError(f"cannot read reviews from {path}: {error}") from error
    reviews = [review for review in reviews if review]
    if not reviews:
        raise LoadTestError(f"no reviews in {path}")
    return reviews


def check_rest_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadTestError(f"--rest-url must look like http://host:8501, got {url!r}")
    return url.rstrip("/")


def check_grpc_target(target: str) -> str:
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or "/" in target:
        raise LoadTestError(f"--grpc-target must look like host:8500, got {target!r}")
    return target


class Transport:
    """One endpoint: sends predict requests and names their outcome."""

    name = ""

    async def predict(self, reviews: list[str]) -> str:
        raise NotImplementedError

    async def check(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class RestTransport(Transport):
    name = "REST"

    def __init__(self, url: str, model_name: str):
        import aiohttp

        self._aiohttp = aiohttp
        self._model_url = f"{url}/v1/models/{model_name}"
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def predict(self, reviews: list[str]) -> str:
        body = {"signature_name": SIGNATURE_NAME, "instances": reviews}
        try:
            async with self._session.post(f"{self._model_url}:predict", json=body) as response:
                await response.read()
                return "OK" if response.status == 200 else f"HTTP {response.status}"
        except TimeoutError:
            return "timeout"
        except self._aiohttp.ClientError as error:
            return f"connection error ({type(error).__name__})"

    async def check(self) -> None:
        try:
            async with self._session.get(self._model_url) as response:
                text = await response.text()
                if response.status != 200:
                    raise LoadTestError(f"{self._model_url} answered {response.status}: {text}")
        except (self._aiohttp.ClientError, TimeoutError) as error:
            raise LoadTestError(f"{self._model_url} is unreachable: {error}") from error

    async def close(self) -> None:
        await self._session.close()


class GrpcTransport(Transport):
    name = "gRPC"

    def __init__(self, target: str, model_name: str):
        import grpc
        from tensorflow.core.framework import types_pb2
        from tensorflow_serving.apis import (
            get_model_status_pb2,
            model_service_pb2_grpc,
            predict_pb2,
            prediction_service_pb2_grpc,
        )

        self._grpc, self._predict_pb2, self._status_pb2 = grpc, predict_pb2, get_model_status_pb2
        self._dt_string = types_pb2.DT_STRING
        self._target, self._model_name = target, model_name
        self._channel = grpc.aio.insecure_channel(
            target, options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        )
        self._predict = prediction_service_pb2_grpc.PredictionServiceStub(self._channel).Predict
        self._status = model_service_pb2_grpc.ModelServiceStub(self._channel).GetModelStatus

    def _request(self, reviews: list[str]):
        request = self._predict_pb2.PredictRequest()
        request.model_spec.name = self._model_name
        request.model_spec.signature_name = SIGNATURE_NAME
        tensor = request.inputs[INPUT_KEY]
        tensor.dtype = self._dt_string
        tensor.tensor_shape.dim.add(size=len(reviews))
        tensor.string_val.extend(review.encode("utf-8") for review in reviews)
        return request

    async def predict(self, reviews: list[str]) -> str:
        try:
            await self._predict(self._request(reviews), timeout=REQUEST_TIMEOUT_SECONDS)
            return "OK"
        except self._grpc.aio.AioRpcError as error:
            return error.code().name

    async def check(self) -> None:
        request = self._status_pb2.GetModelStatusRequest()
        request.model_spec.name = self._model_name
        try:
            await self._status(request, timeout=5)
        except self._grpc.aio.AioRpcError as error:
            raise LoadTestError(
                f"gRPC {self._target} is unreachable or has no model {self._model_name}: "
                f"{error.code().name}: {error.details()}"
            ) from error

    async def close(self) -> None:
        await self._channel.close()


@dataclass(frozen=True)
class Plan:
    """What to run."""

    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    seconds: float = 10.0
    max_requests: int = 100_000
    open_loop: bool = False
    start_rate: float = 50.0
    rate_factor: float = 1.5
    max_rate: float = 20_000.0
    slo_p99_ms: float = LATENCY_SLO_P99_MS
    error_budget: float = DEFAULT_ERROR_BUDGET


class LoadTest:
    """Runs a plan against the given transports and collects the steps."""

    def __init__(self, transports: list[Transport], reviews: list[str], plan: Plan, progress=None):
        self.transports, self.reviews, self.plan = transports, reviews, plan
        self.progress = progress or (lambda line, final: None)
        self.results: list[StepResult] = []
        self._next_review = 0

    def _batch(self, size: int) -> list[str]:
        start = self._next_review
        self._next_review = (start + size) % len(self.reviews)
        return [self.reviews[(start + i) % len(self.reviews)] for i in range(size)]

    async def run(self) -> list[StepResult]:
        for transport in self.transports:
            await transport.check()
        for transport in self.transports:
            for size in self.plan.batch_sizes:
                for clients in self.plan.concurrency:
                    self.results.append(await self.closed_step(transport, size, clients))
                if self.plan.open_loop:
                    await self.open_steps(transport, size)
        return self.results

    async def closed_step(self, transport: Transport, size: int, clients: int) -> StepResult:
        recorder, deadline = Recorder(), time.perf_counter() + self.plan.seconds
        budget = [self.plan.max_requests]

        async def client() -> None:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                started = time.perf_counter()
                outcome = await transport.predict(self._batch(size))
                recorder.record(time.perf_counter() - started, outcome)

        label = f"{transport.name} closed, {size} review(s)/request, {clients} client(s)"
        return await self._measure(
            label, recorder, [client() for _ in range(clients)], transport, size, clients, None
        )

    async def open_steps(self, transport: Transport, size: int) -> None:
        """Steps the rate up until a step does not hold (``step_holds``) twice in a row (a step
        that breaks is run once more, so that one noisy second does not end the ramp)."""
        rate, failures = self.plan.start_rate, 0
        while rate <= self.plan.max_rate:
            step = await self.open_step(transport, size, rate)
            self.results.append(step)
            if step_holds(step, self.plan.slo_p99_ms, self.plan.error_budget):
                rate, failures = rate * self.plan.rate_factor, 0
            elif failures:
                return
            else:
                failures = 1

    async def open_step(self, transport: Transport, size: int, rate: float) -> StepResult:
        recorder = Recorder()
        schedule = open_loop_schedule(rate, self.plan.seconds, self.plan.max_requests)
        in_flight: set[asyncio.Task] = set()

        async def send(scheduled: float) -> None:
            outcome = await transport.predict(self._batch(size))
            recorder.record(time.perf_counter() - scheduled, outcome)

        async def scheduler() -> None:
            start = time.perf_counter()
            for offset in schedule:
                scheduled = start + offset
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                if len(in_flight) >= MAX_IN_FLIGHT:
                    recorder.record(time.perf_counter() - scheduled, CLIENT_SATURATED)
                    continue
                task = asyncio.ensure_future(send(scheduled))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            while in_flight:
                await asyncio.gather(*list(in_flight))

        label = f"{transport.name} open, {size} review(s)/request, {rate:,.0f} requests/s"
        return await self._measure(label, recorder, [scheduler()], transport, size, None, rate)

    async def _measure(
        self,
        label: str,
        recorder: Recorder,
        work: list[Awaitable[None]],
        transport: Transport,
        size: int,
        clients: int | None,
        rate: float | None,
    ) -> StepResult:
        started = time.perf_counter()
        reporter = asyncio.ensure_future(self._report(label, recorder, started))
        try:
            await asyncio.gather(*work)
        finally:
            reporter.cancel()
        seconds = time.perf_counter() - started
        ok = recorder.outcomes.get("OK", 0)
        step = StepResult(
            transport=transport.name,
            mode="closed" if rate is None else "open",
            reviews_per_request=size,
            concurrency=clients,
            target_rate=rate,
            seconds=round(seconds, 3),
            requests=len(recorder.latencies),
            errors={k: v for k, v in recorder.outcomes.items() if k != "OK"},
            requests_per_second=ok / seconds,
            reviews_per_second=ok * size / seconds,
            latency_ms=latency_summary(recorder.latencies),
        )
        self.progress(f"{label}: {describe(step)}", True)
        return step

    async def _report(self, label: str, recorder: Recorder, started: float) -> None:
        while True:
            await asyncio.sleep(1.0)
            elapsed = time.perf_counter() - started
            done = len(recorder.latencies)
            errors = done - recorder.outcomes.get("OK", 0)
            self.progress(
                f"{label}: {elapsed:4.0f} s, {done / elapsed:8,.0f} requests/s, {errors} error(s)",
                False,
            )


def describe(step: StepResult) -> str:
    latency = step.latency_ms
    errors = ", ".join(f"{k}: {v}" for k, v in sorted(step.errors.items())) or "no errors"
    return (
        f"{step.requests_per_second:,.0f} requests/s, {step.reviews_per_second:,.0f} reviews/s, "
        f"p50 {latency['p50']:.1f} / p99 {latency['p99']:.1f} ms, {errors}"
    )


def max_sustainable_rates(
    results: list[StepResult], slo_p99_ms: float, error_budget: float
) -> list[dict]:
    """Per transport and batch size: the highest open-loop rate among the steps that held
    (``step_holds``)."""
    best: dict[tuple[str, int], StepResult] = {}
    for step in results:
        if step.mode != "open" or not step_holds(step, slo_p99_ms, error_budget):
            continue
        key = (step.transport, step.reviews_per_request)
        if key not in best or step.requests_per_second > best[key].requests_per_second:
            best[key] = step
    return [
        {
            "transport": transport,
            "reviews_per_request": size,
            "requests_per_second": round(step.requests_per_second, 1),
            "reviews_per_second": round(step.reviews_per_second, 1),
            "p99_ms": round(step.latency_ms["p99"], 2),
        }
        for (transport, size), step in sorted(best.items())
    ]


def markdown(results: list[StepResult], document: dict) -> str:
    lines = [
        "| transport | mode | reviews/request | clients or rate | requests/s | reviews/s "
        "| p50 / p90 / p99 / p99.9 ms | errors |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for step in results:
        load = (
            f"{step.concurrency} clients" if step.mode == "closed" else f"{step.target_rate:,.0f}/s"
        )
        latency = " / ".join(f"{step.latency_ms[k]:.1f}" for k in ("p50", "p90", "p99", "p99.9"))
        errors = ", ".join(f"{k}: {v}" for k, v in sorted(step.errors.items())) or "0"
        lines.append(
            f"| {step.transport} | {step.mode} | {step.reviews_per_request} | {load} | "
            f"{step.requests_per_second:,.0f} | {step.reviews_per_second:,.0f} | {latency} "
            f"| {errors} |"
        )
    for row in document.get("max_sustainable", []):
        lines.append("")
        lines.append(
            f"Max sustainable ({row['transport']}, {row['reviews_per_request']} review(s)/request, "
            f"p99 <= {document['plan']['slo_p99_ms']:g} ms, errors <= "
            f"{100 * document['plan']['error_budget']:g}%): {row['requests_per_second']:,.0f} "
            f"requests/s ({row['reviews_per_second']:,.0f} reviews/s, p99 {row['p99_ms']} ms)"
        )
    return "\n".join(lines) + "\n"


def plot(results: list[StepResult], path: Path) -> None:
    """p50 and p99 against achieved reviews/s, one line per transport and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    series: dict[tuple, list[StepResult]] = {}
    for step in results:
        series.setdefault((step.transport, step.mode, step.reviews_per_request), []).append(step)
    for (transport, mode, size), steps in sorted(series.items()):
        steps = sorted(steps, key=lambda s: s.reviews_per_second)
        x = [s.reviews_per_second for s in steps]
        label = f"{transport} {mode}, {size}/request"
        line = axes.plot(x, [s.latency_ms["p99"] for s in steps], marker="o", label=f"{label} p99")
        axes.plot(x, [s.latency_ms["p50"] for s in steps], linestyle=":", color=line[0].get_color())
    axes.set_xlabel("achieved reviews/s")
    axes.set_ylabel("latency, ms (solid p99, dotted p50)")
    axes.set_yscale("log")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(results: list[StepResult], plan: Plan, endpoints: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "endpoints": endpoints,
        "plan": asdict(plan),
        "steps": [asdict(step) for step in results],
        "max_sustainable": max_sustainable_rates(results, plan.slo_p99_ms, plan.error_budget)
        if plan.open_loop
        else [],
    }
    (out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results, document))
    plot(results, out / "latency.png")
    return document


def run_load_test(
    rest_url: str | None,
    grpc_target: str | None,
    plan: Plan,
    reviews: list[str],
    out: Path,
    model_name: str = MODEL_NAME,
    progress: Callable[[str, bool], None] | None = None,
) -> dict:
    """Checks the endpoints, runs the plan, writes the report; returns its JSON document.

    Raises:
        LoadTestError: a malformed URL or target, or an endpoint that does not answer.
    """
    if not rest_url and not grpc_target:
        raise LoadTestError("give --rest-url and/or --grpc-target")
    endpoints = {}
    if rest_url:
        endpoints["rest_url"] = check_rest_url(rest_url)
    if grpc_target:
        endpoints["grpc_target"] = check_grpc_target(grpc_target)

    async def main() -> list[StepResult]:
        transports: list[Transport] = []
        if rest_url:
            transports.append(RestTransport(endpoints["rest_url"], model_name))
        if grpc_target:
            transports.append(GrpcTransport(endpoints["grpc_target"], model_name))
        try:
            return await LoadTest(transports, reviews, plan, progress).run()
        finally:
            for transport in transports:
                await transport.close()

    results = asyncio.run(main())
    return write_report(results, plan, endpoints, out)


def terminal_progress(line: str, final: bool) -> None:
    """A live line on a terminal; only the final line of each step otherwise."""
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        sys.stderr.flush()
    elif final:
        print(line, file=sys.stderr, flush=True)
