"""Command line: ``python -m serving <command>`` (predict, status, metadata, smoke, loadtest,
capacity, versions, rollout).

python -m serving predict --rest-url http://localhost:8501 "A great film" "Dreadful"
python -m serving predict --grpc-target localhost:8500 "A great film"
python -m serving status --rest-url http://localhost:8501
python -m serving smoke --rest-url http://localhost:8501 --grpc-target localhost:8500
python -m serving versions models/imdb --latest
python -m serving rollout canary --config models.config --rest-url http://localhost:8501
python -m serving loadtest --rest-url http://localhost:8501 --grpc-target localhost:8500
python -m serving capacity --results reports/loadtest/results.json --target-rps 2000

``versions`` needs no dependencies (plain ``python3`` runs it): the Makefile and the scripts
ask it which version folders a model base path holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from serving.cli_args import (
    EXIT_FAILED,
    EXIT_OK,
    parse_args,
)
from serving.contract import MODEL_BASE_DIR, MODEL_NAME, REQUEST_TIMEOUT_SECONDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("predict", "predict the sentiment of reviews"),
        ("status", "show the model's version status"),
        ("metadata", "show the served signature"),
    ):
        command = commands.add_parser(name, help=help_text)
        endpoint = command.add_mutually_exclusive_group(required=True)
        endpoint.add_argument("--rest-url", help="e.g. http://localhost:8501")
        endpoint.add_argument("--grpc-target", help="e.g. localhost:8500")
        command.add_argument("--model-name", default=MODEL_NAME)
        command.add_argument(
            "--timeout", type=float, default=REQUEST_TIMEOUT_SECONDS, help="seconds per request"
        )
        command.add_argument("--version", type=int, help="a specific version (default: latest)")
        command.add_argument("--json", action="store_true", help="print JSON")
        if name == "predict":
            command.add_argument("--label", help="a version label such as 'stable'")
            command.add_argument(
                "texts", nargs="+", help="reviews ('-' reads one per line from stdin)"
            )
    commands.add_parser(
        "smoke", help="smoke-test an endpoint (see serving/smoke.py)", add_help=False
    )
    commands.add_parser(
        "rollout",
        help="publish, canary, promote, roll back a version (see serving/rollout/)",
        add_help=False,
    )
    _add_loadtest_parser(commands)
    versions = commands.add_parser(
        "versions", help="list the version folders of a model base path (serving/versions.py)"
    )
    versions.add_argument("base_path", help="e.g. models/imdb")
    versions.add_argument(
        "--latest", action="store_true", help="print only the highest; exit 1 if there is none"
    )
    return parser


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _add_capacity_arguments(command: argparse.ArgumentParser, required: bool) -> None:
    group = command.add_argument_group("capacity plan")
    group.add_argument(
        "--target-rps", type=float, required=required, help="peak requests/s to plan for"
    )
    group.add_argument(
        "--reviews-per-request", type=int, help="reviews per request at the peak (default: 1)"
    )
    group.add_argument("--capacity-transport", choices=("gRPC", "REST"), help="(default: gRPC)")
    group.add_argument(
        "--measured-replicas", type=int, default=1, help="replicas behind the measured endpoint"
    )
    group.add_argument("--cpus-per-pod", type=int, default=2, help="the pods' CPU (default: 2)")


def _add_loadtest_parser(commands) -> None:
    from serving.loadtest import Plan

    plan = Plan()
    command = commands.add_parser(
        "loadtest", help="load-test a TF Serving endpoint (see serving/loadtest.py)"
    )
    command.add_argument("--rest-url", help="e.g. http://localhost:8501")
    command.add_argument("--grpc-target", help="e.g. localhost:8500")
    command.add_argument("--model-name", default=MODEL_NAME)
    command.add_argument("--reviews", help="text file (a review per line) or CSV with 'review'")
    command.add_argument(
        "--duration", type=float, default=plan.seconds, help="seconds per step (default: 10)"
    )
    command.add_argument(
        "--concurrency", type=_int_list, default=plan.concurrency, help="closed-loop clients"
    )
    command.add_argument(
        "--batch-sizes", type=_int_list, default=plan.batch_sizes, help="reviews per request"
    )
    command.add_argument(
        "--max-requests", type=int, default=plan.max_requests, help="cap on requests per step"
    )
    command.add_argument("--open-loop", action="store_true", help="also step a constant rate")
    command.add_argument("--start-rate", type=float, default=plan.start_rate)
    command.add_argument("--rate-factor", type=float, default=plan.rate_factor)
    command.add_argument("--max-rate", type=float, default=plan.max_rate)
    command.add_argument("--slo-p99-ms", type=float, default=plan.slo_p99_ms)
    command.add_argument("--error-budget", type=float, default=plan.error_budget)
    command.add_argument("--out", type=Path, default=Path("reports/loadtest"))
    _add_capacity_arguments(command, required=False)
    bench = commands.add_parser(
        "bench-serve", help="the local server with batching off and on (serving/bench_serve.py)"
    )
    bench.add_argument("--model-dir", type=Path, default=Path(MODEL_BASE_DIR))
    bench.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    bench.add_argument("--out", type=Path, default=Path("reports/bench-serve"))
    capacity = commands.add_parser(
        "capacity", help="capacity plan from a load-test report (see serving/capacity.py)"
    )
    capacity.add_argument("--results", type=Path, default=Path("reports/loadtest/results.json"))
    capacity.add_argument("--slo-p99-ms", type=float, default=plan.slo_p99_ms)
    capacity.add_argument(
        "--error-budget", type=float, help="(default: the one the load test used, in its report)"
    )
    _add_capacity_arguments(capacity, required=True)


def _loadtest(args: argparse.Namespace) -> int:
    from serving.loadtest import (
        LoadTestError,
        Plan,
        read_reviews,
        run_load_test,
        terminal_progress,
    )

    try:
        plan = Plan(
            concurrency=args.concurrency,
            batch_sizes=args.batch_sizes,
            seconds=args.duration,
            max_requests=args.max_requests,
            open_loop=args.open_loop,
            start_rate=args.start_rate,
            rate_factor=args.rate_factor,
            max_rate=args.max_rate,
            slo_p99_ms=args.slo_p99_ms,
            error_budget=args.error_budget,
        )
        document = run_load_test(
            args.rest_url,
            args.grpc_target,
            plan,
            read_reviews(args.reviews),
            args.out,
            args.model_name,
            terminal_progress,
        )
    except LoadTestError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    print((args.out / "results.md").read_text(), end="")
    if args.target_rps:
        if args.capacity_transport is None:
            args.capacity_transport = "gRPC" if args.grpc_target else "REST"
        return _write_capacity(document["steps"], args, args.out, plan.error_budget)
    return EXIT_OK


def _capacity(args: argparse.Namespace) -> int:
    from serving.loadtest import DEFAULT_ERROR_BUDGET

    try:
        report = json.loads(args.results.read_text())
        steps = report["steps"]
        # Steps are judged as the load test judged them: with the budget it ran with.
        recorded = report.get("plan", {}).get("error_budget", DEFAULT_ERROR_BUDGET)
    except (OSError, ValueError, KeyError, AttributeError) as error:
        print(
            f"error: cannot read a load-test report from {args.results}: {error}", file=sys.stderr
        )
        return EXIT_FAILED
    error_budget = recorded if args.error_budget is None else args.error_budget
    return _write_capacity(steps, args, args.results.parent, error_budget)


def _write_capacity(
    steps: list[dict], args: argparse.Namespace, out: Path, error_budget: float
) -> int:
    from serving.capacity import (
        CapacityError,
        CapacityTarget,
        batching_config,
        hpa_patch,
        plan_capacity,
        plan_document,
        summary,
    )

    try:
        target = CapacityTarget(
            target_rps=args.target_rps,
            reviews_per_request=args.reviews_per_request or 1,
            slo_p99_ms=args.slo_p99_ms,
            transport=args.capacity_transport or "gRPC",
            measured_replicas=args.measured_replicas,
            cpus_per_pod=args.cpus_per_pod,
            error_budget=error_budget,
        )
        plan = plan_capacity(steps, target)
    except (CapacityError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    text = summary(plan, target)
    (out / "capacity.json").write_text(json.dumps(plan_document(plan, target), indent=2) + "\n")
    (out / "capacity.md").write_text(text + "\n")
    (out / "hpa-patch.yaml").write_text(hpa_patch(plan))
    (out / "batching.config").write_text(batching_config(plan))
    print(text)
    print(f"Wrote {out / 'hpa-patch.yaml'} and {out / 'batching.config'} (docs/deploy.md: Scale)")
    return EXIT_OK


def _versions(args: argparse.Namespace) -> int:
    from serving.versions import list_versions

    numbers = list_versions(args.base_path)
    if args.latest and not numbers:
        print(f"error: no version folder under {args.base_path}", file=sys.stderr)
        return EXIT_FAILED
    for number in numbers[-1:] if args.latest else numbers:
        print(number)
    return EXIT_OK


def _predict(client, args: argparse.Namespace) -> None:
    texts = args.texts
    if texts == ["-"]:
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
    predictions = client.predict(texts, version=args.version, label=args.label)
    if args.json:
        rows = [asdict(p) | {"review": t} for p, t in zip(predictions, texts, strict=True)]
        print(json.dumps(rows, indent=1))
        return
    for prediction, text in zip(predictions, texts, strict=True):
        shown = text if len(text) <= 70 else text[:67] + "..."
        print(f"[{client.transport}] {prediction.label:<8} {prediction.probability:.4f}  {shown}")


def _status(client, args: argparse.Namespace) -> None:
    versions = client.status(args.version)
    if args.json:
        print(json.dumps([asdict(v) for v in versions], indent=1))
        return
    for v in versions:
        error = f" ({v.error_code}: {v.error_message})" if v.error_code != "OK" else ""
        print(f"[{client.transport}] version {v.version}: {v.state}{error}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["smoke"]:
        from serving.smoke import main as smoke_main

        return smoke_main(argv[1:])
    if argv[:1] == ["rollout"]:
        from serving.rollout.cli import main as rollout_main

        return rollout_main(argv[1:])
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    if args.command == "versions":
        return _versions(args)
    if args.command == "loadtest":
        return _loadtest(args)
    if args.command == "capacity":
        return _capacity(args)
    if args.command == "bench-serve":
        from serving.bench_serve import run_bench_serve

        run_bench_serve(args.model_dir, args.out, args.duration)
        print((args.out / "bench-serve.md").read_text(), end="")
        return EXIT_OK

    from serving.client import RequestError, make_client

    try:
        with make_client(args.rest_url, args.grpc_target, args.model_name, args.timeout) as client:
            if args.command == "predict":
                _predict(client, args)
            elif args.command == "status":
                _status(client, args)
            else:
                print(json.dumps(asdict(client.metadata(args.version)), indent=1))
    except (RequestError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
