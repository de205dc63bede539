"""The faults a serving container meets, measured on a real engine: a stop under load, and
memory through a sustained load with label flips.

The tests in test_faults.py and test_compose.py assert on these results; `make bench-containers`
runs the same tests with a longer memory run and a real model, keeps each result as JSON
(FAULTS_REPORT_DIR) and then writes the table:
    python -m tests.docker.faults reports/bench-containers
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from serving.client import make_client
from tests.docker.dockerlib import Container, docker

REVIEW = "A wonderful film, moving and funny, with a cast at the top of its game."


@dataclass(frozen=True)
class Request:
    transport: str
    started: float  # time.monotonic()
    ended: float
    error: str | None  # None when it succeeded


@dataclass
class Load:
    """Closed-loop single-review predicts from ``rest_clients`` REST and ``grpc_clients`` gRPC
    threads until ``stop()``, each request recorded with its start, end and outcome."""

    container: Container
    rest_clients: int = 4
    grpc_clients: int = 4
    # Reviews per request: more makes each request longer, so that one in flight at SIGTERM
    # is still in flight when a server without a drain dies a few milliseconds later.
    reviews_per_request: int = 1
    review: str = REVIEW
    timeout: float = 10.0
    requests: list[Request] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _client_loop(self, transport: str) -> None:
        target = (
            {"rest_url": self.container.rest_url}
            if transport == "REST"
            else {"grpc_target": self.container.grpc_target}
        )
        client = make_client(**target, timeout=self.timeout)
        reviews = [self.review] * self.reviews_per_request
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                error = None
                try:
                    client.predict(reviews)
                except Exception as failure:
                    error = f"{type(failure).__name__}: {failure}"[:200]
                with self._lock:
                    self.requests.append(Request(transport, started, time.monotonic(), error))
                if error:
                    # A refused connection fails in microseconds; do not spin on it.
                    time.sleep(0.05)
        finally:
            client.close()

    def start(self) -> Load:
        for transport, count in (("REST", self.rest_clients), ("gRPC", self.grpc_clients)):
            for _ in range(count):
                thread = threading.Thread(target=self._client_loop, args=(transport,), daemon=True)
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)


@dataclass(frozen=True)
class StopResult:
    """What a stop under load did."""

    how: str
    drain_seconds: float
    reviews_per_request: int
    median_request_ms: float
    requests: int
    failed: int
    in_flight_at_sigterm: int
    in_flight_failed: int
    failed_after_sigterm: int
    stop_seconds: float
    exit_code: int
    oom_killed: bool
    failures: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def stop_under_load(
    container: Container,
    stop: Callable[[], subprocess.CompletedProcess],
    how: str,
    drain_seconds: float,
    warmup_seconds: float = 3.0,
    reviews_per_request: int = 1,
    review: str = REVIEW,
) -> StopResult:
    """Loads ``container``, calls ``stop`` (e.g. ``docker stop``) mid-load, and counts.

    A request is *in flight at SIGTERM* when it started before ``stop`` was called and ended
    after: the stop command sends SIGTERM within milliseconds of the call, so this set holds
    every request the signal could have hit (and a few that it could not).
    """
    load = Load(container, reviews_per_request=reviews_per_request, review=review).start()
    try:
        time.sleep(warmup_seconds)
        if not any(request.error is None for request in load.snapshot()):
            raise AssertionError(f"no request succeeded before the stop:\n{load.snapshot()[:5]}")
        sigterm = time.monotonic()
        result = stop()
        stop_seconds = time.monotonic() - sigterm
        if result.returncode != 0:
            raise AssertionError(f"{how} failed: {result.stderr}")
    finally:
        load.stop()
    requests = load.snapshot()
    in_flight = [r for r in requests if r.started < sigterm < r.ended]
    after = [r for r in requests if r.started >= sigterm]
    state = container.state()
    succeeded = [r.ended - r.started for r in requests if r.error is None]
    return StopResult(
        how=how,
        drain_seconds=drain_seconds,
        reviews_per_request=reviews_per_request,
        median_request_ms=round(1000 * sorted(succeeded)[len(succeeded) // 2], 1),
        requests=len(requests),
        failed=sum(r.error is not None for r in requests),
        in_flight_at_sigterm=len(in_flight),
        in_flight_failed=sum(r.error is not None for r in in_flight),
        failed_after_sigterm=sum(r.error is not None for r in after),
        stop_seconds=round(stop_seconds, 2),
        exit_code=state["ExitCode"],
        oom_killed=state["OOMKilled"],
        failures=sorted({r.error for r in requests if r.error})[:5],
    )


def cgroup_memory_bytes(container: Container) -> int:
    """The container's resident (anonymous) memory, read from its own cgroup: ``total_rss`` on
    cgroup v1, ``anon`` on v2 (page cache left out: the kernel reclaims it before an OOM)."""
    for path, key in (
        ("/sys/fs/cgroup/memory.stat", "anon"),
        ("/sys/fs/cgroup/memory/memory.stat", "total_rss"),
    ):
        result = docker("exec", container.id, "cat", path)
        if result.returncode == 0:
            match = re.search(rf"^{key} (\d+)$", result.stdout, re.MULTILINE)
            if match:
                return int(match.group(1))
    raise AssertionError(f"no memory.stat in {container.id[:12]}'s cgroup")


@dataclass(frozen=True)
class MemoryResult:
    limit_mib: float
    seconds: float
    samples_mib: list[float]
    peak_mib: float
    last_third_slope_mib_per_minute: float
    flips: int
    requests: int
    failed: int
    oom_killed: bool
    running: bool

    def as_dict(self) -> dict:
        return asdict(self)


def slope_per_minute(times: list[float], values: list[float]) -> float:
    """The least-squares slope of ``values`` over ``times`` (seconds), per minute."""
    n = len(times)
    if n < 2:
        return 0.0
    mean_t, mean_v = sum(times) / n, sum(values) / n
    spread = sum((t - mean_t) ** 2 for t in times)
    if spread == 0:
        return 0.0
    return (
        60 * sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True)) / spread
    )


def memory_under_load(
    container: Container,
    flip: Callable[[int], None],
    limit_bytes: int,
    seconds: float,
    flips: int,
    sample_every: float = 1.0,
) -> MemoryResult:
    """Loads ``container`` for ``seconds`` while calling ``flip(i)`` ``flips`` times at even
    intervals, sampling the cgroup's resident memory; reports the slope over the last third."""
    load = Load(container).start()
    started = time.monotonic()
    times: list[float] = []
    samples: list[float] = []
    flip_times = [started + seconds * (i + 1) / (flips + 1) for i in range(flips)]
    done = 0
    try:
        while (now := time.monotonic()) < started + seconds:
            if done < flips and now >= flip_times[done]:
                flip(done)
                done += 1
            times.append(now - started)
            samples.append(cgroup_memory_bytes(container) / 2**20)
            time.sleep(sample_every)
    finally:
        load.stop()
    requests = load.snapshot()
    last = len(times) * 2 // 3
    state = container.state()
    return MemoryResult(
        limit_mib=limit_bytes / 2**20,
        seconds=round(seconds, 1),
        samples_mib=[round(value, 1) for value in samples],
        peak_mib=round(max(samples), 1),
        last_third_slope_mib_per_minute=round(slope_per_minute(times[last:], samples[last:]), 2),
        flips=done,
        requests=len(requests),
        failed=sum(r.error is not None for r in requests),
        oom_killed=state["OOMKilled"],
        running=state["Running"],
    )


def write_report(folder: Path) -> Path:
    """Turns the JSON results in ``folder`` into ``folder``/bench-containers.md."""
    lines = [
        "# Container faults (make bench-containers)",
        "",
        "Stop under load: 4 REST + 4 gRPC closed-loop clients, 256 long reviews per request.",
        "",
        "| stop | drain (s) | requests | in flight at SIGTERM | of those failed | failed after "
        "SIGTERM | stop took (s) | exit code |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in ("stop-docker", "stop-compose", "stop-docker-no-drain"):
        path = folder / f"{name}.json"
        if path.exists():
            r = json.loads(path.read_text())
            lines.append(
                f"| {r['how']} | {r['drain_seconds']:g} | {r['requests']} | "
                f"{r['in_flight_at_sigterm']} | {r['in_flight_failed']} | "
                f"{r['failed_after_sigterm']} | {r['stop_seconds']} | {r['exit_code']} |"
            )
    memory = folder / "memory.json"
    if memory.exists():
        m = json.loads(memory.read_text())
        lines += [
            "",
            f"Memory ({m['model']}, two versions loaded, limit {m['limit_mib']:g} MiB): "
            f"{m['seconds']:g} s of load ({m['requests']} requests, {m['failed']} failed) with "
            f"{m['flips']} label flips; resident peak {m['peak_mib']} MiB, slope over the last "
            f"third {m['last_third_slope_mib_per_minute']} MiB/min, OOMKilled {m['oom_killed']}.",
            "The figure is the local server's (a Python process), not tensorflow_model_server's.",
        ]
    report = folder / "bench-containers.md"
    report.write_text("\n".join(lines) + "\n")
    return report


if __name__ == "__main__":
    print(write_report(Path(sys.argv[1])).read_text(), end="")
