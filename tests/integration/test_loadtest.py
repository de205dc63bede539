"""A short load test against the local server: the report, zero errors, the capacity plan."""

from __future__ import annotations

import json

from serving.__main__ import main
from tests.helpers import free_port


def test_a_short_sweep_writes_the_report_plot_and_capacity_plan(
    tmp_path, rest_url, grpc_target, capsys
):
    out = tmp_path / "loadtest"
    code = main(
        [
            "loadtest",
            "--rest-url",
            rest_url,
            "--grpc-target",
            grpc_target,
            "--duration",
            "0.5",
            "--concurrency",
            "1,2",
            "--batch-sizes",
            "1,4",
            "--open-loop",
            "--start-rate",
            "20",
            "--rate-factor",
            "2",
            "--max-rate",
            "40",
            "--slo-p99-ms",
            "1000",
            "--out",
            str(out),
            "--target-rps",
            "10",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((out / "results.json").read_text())
    steps = report["steps"]
    # Per transport and request size: 2 closed steps and 2 open steps (20 and 40 requests/s).
    assert len(steps) == 2 * 2 * 4
    assert {s["transport"] for s in steps} == {"REST", "gRPC"}
    assert all(s["errors"] == {} and s["requests"] > 0 for s in steps)
    assert all(0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] for s in steps)
    assert len(report["max_sustainable"]) == 4
    for name in ("results.md", "latency.png", "capacity.json", "hpa-patch.yaml", "batching.config"):
        assert (out / name).stat().st_size > 0
    # One progress line per finished step on a non-terminal stderr; the table and plan on stdout.
    assert captured.err.count("requests/s") >= len(steps)
    assert (
        "| transport | mode |" in captured.out and "Capacity plan for 10 requests/s" in captured.out
    )


def test_an_unreachable_endpoint_fails_with_one_line(tmp_path, capsys):
    code = main(
        ["loadtest", "--rest-url", f"http://127.0.0.1:{free_port()}", "--out", str(tmp_path)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "is unreachable" in err
    assert not (tmp_path / "results.json").exists()


def test_a_malformed_target_fails_with_one_line(capsys):
    assert main(["loadtest", "--grpc-target", "http://localhost:8500"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: --grpc-target must look like host:8500, got 'http://localhost:8500'"
    )
