"""Serving benchmark: the local server with batching off and on, measured in one run.

``python -m serving bench-serve --model-dir models/imdb`` starts the local server on free
loopback ports without ``--enable_batching``, with it and k8s/base/config/batching.config, and
with that config's ``batch_timeout_micros`` set to 0 (TF Serving's advice for CPUs; the config
is parsed and only that field is changed, so the row measures what it says whatever the file's
layout; left out when the shipped config has no timeout). It load-tests each over gRPC with 16
clients: single-review requests and 32-review requests, then an open loop of single-review
requests for the maximum rate at the p99 SLO. The load generator shares the machine with the
server, as the report says. Writes ``<out>/bench-serve.{json,md}``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from google.protobuf import text_format
from google.protobuf.message import Message

from serving.client import GrpcClient, wait_until_available
from serving.contract import LATENCY_SLO_P99_MS, MODEL_NAME
from serving.loadtest import Plan, read_reviews, run_load_test
from serving.model_server.config_protos import BatchingParameters

BATCHING_CONFIG = Path(__file__).resolve().parent.parent / "k8s/base/config/batching.config"
# Seconds to wait for the server to load the model.
START_DEADLINE_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def measure(
    model_dir: Path, batching: Path | None, name: str, plan: Plan, reviews: list[str], out: Path
) -> dict:
    """One server run (``batching``: a parameters file, or None for no batching): start it,
    load-test it over gRPC, stop it."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "serving.model_server",
        f"--port={port}",
        "--rest_api_port=0",
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={model_dir.resolve()}",
        "--bind_address=127.0.0.1",
    ]
    if batching:
        command += ["--enable_batching", f"--batching_parameters_file={batching}"]
    log = (out / f"server-{name}.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with GrpcClient(f"127.0.0.1:{port}") as client:
            wait_until_available(client, START_DEADLINE_SECONDS)
        return run_load_test(None, f"127.0.0.1:{port}", plan, reviews, out / name)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def read_batching_parameters(path: Path) -> Message:
    """A ``--batching_parameters_file``, parsed as TF Serving parses it (protobuf text format).

    Raises:
        ValueError: naming the file and the line of a syntax error or an unknown field.
    """
    try:
        return text_format.Parse(path.read_text(), BatchingParameters())
    except (OSError, text_format.ParseError) as error:
        raise ValueError(f"{path}: not valid batching parameters: {error}") from error


def without_batch_timeout(parameters: Message) -> str:
    """The text of ``parameters`` (a BatchingParameters message) with ``batch_timeout_micros``
    set to 0 and every other field as it is."""
    variant = BatchingParameters()
    variant.CopyFrom(parameters)
    variant.batch_timeout_micros.value = 0
    return (
        f"# {BATCHING_CONFIG.name} with batch_timeout_micros 0 (serving/bench_serve.py).\n"
        + text_format.MessageToString(variant)
    )


def _timeout_label(micros: int) -> str:
    if micros == 0:
        return "no timeout"
    return f"{micros // 1000} ms timeout" if micros % 1000 == 0 else f"{micros} µs timeout"


def run_bench_serve(model_dir: Path, out: Path, seconds: float = 10.0) -> dict:
    """Measures the batching variants (module docstring) and writes the report.

    Raises:
        ValueError: the shipped batching config is not valid batching parameters.
    """
    shipped = read_batching_parameters(BATCHING_CONFIG)
    timeout = shipped.batch_timeout_micros.value  # 0 when unset, as for TF Serving
    out.mkdir(parents=True, exist_ok=True)
    reviews = read_reviews(None)
    closed = Plan(concurrency=(16,), batch_sizes=(1, 32), seconds=seconds)
    open_loop = Plan(
        concurrency=(), batch_sizes=(1,), seconds=seconds, open_loop=True, start_rate=200
    )
    configs = {
        "off": None,
        f"on, k8s/base/config/batching.config ({_timeout_label(timeout)})": BATCHING_CONFIG,
    }
    if timeout:
        no_timeout = out / "batching-no-timeout.config"
        no_timeout.write_text(without_batch_timeout(shipped))
        configs["on, the same with batch_timeout_micros 0"] = no_timeout
    rows = []
    for index, (batching, config) in enumerate(configs.items()):
        name = f"config-{index}"
        steps = measure(model_dir, config, name, closed, reviews, out)["steps"]
        sustained = measure(model_dir, config, name + "-open", open_loop, reviews, out)[
            "max_sustainable"
        ]
        single, large = (next(s for s in steps if s["reviews_per_request"] == n) for n in (1, 32))
        rows.append(
            {
                "batching": batching,
                "single_reviews_per_second": single["reviews_per_second"],
                "single_p99_ms": single["latency_ms"]["p99"],
                "single_errors": single["errors"],
                "batch32_reviews_per_second": large["reviews_per_second"],
                "batch32_p99_ms": large["latency_ms"]["p99"],
                "batch32_errors": large["errors"],
                "single_vs_batch32": single["reviews_per_second"] / large["reviews_per_second"],
                "max_sustainable_single_rps": (
                    sustained[0]["requests_per_second"] if sustained else None
                ),
            }
        )
    document = {"model_dir": str(model_dir), "seconds_per_step": seconds, "rows": rows}
    (out / "bench-serve.json").write_text(json.dumps(document, indent=2) + "\n")
    (out / "bench-serve.md").write_text(markdown(document))
    return document


def markdown(document: dict) -> str:
    lines = [
        "| batching | 1 review/request, 16 clients: reviews/s (p99) | 32 reviews/request, 16 "
        f"clients: reviews/s (p99) | single vs 32 | max single-review rate at p99 <= "
        f"{LATENCY_SLO_P99_MS:g} ms |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in document["rows"]:
        sustained = row["max_sustainable_single_rps"]
        lines.append(
            f"| {row['batching']} "
            f"| {row['single_reviews_per_second']:,.0f} ({row['single_p99_ms']:.1f} ms) "
            f"| {row['batch32_reviews_per_second']:,.0f} ({row['batch32_p99_ms']:.1f} ms) "
            f"| {100 * row['single_vs_batch32']:.0f}% "
            f"| {f'{sustained:,.0f} requests/s' if sustained else 'none'} |"
        )
    return "\n".join(lines) + "\n"
