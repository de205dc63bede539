"""Command line client: ``python -m serving <predict|status|metadata|smoke|versions> ...``.

python -m serving predict --rest-url http://localhost:8501 "A great film" "Dreadful"
python -m serving predict --grpc-target localhost:8500 "A great film"
python -m serving status --rest-url http://localhost:8501
python -m serving smoke --rest-url http://localhost:8501 --grpc-target localhost:8500
python -m serving versions models/imdb --latest

``versions`` needs no dependencies (plain ``python3`` runs it): the Makefile and the scripts
ask it which version folders a model base path holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from serving.cli_args import (
    DEFAULT_TIMEOUT_SECONDS,
    EXIT_FAILED,
    EXIT_OK,
    parse_args,
)
from serving.contract import MODEL_NAME


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
            "--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds per request"
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
    versions = commands.add_parser(
        "versions", help="list the version folders of a model base path (serving/versions.py)"
    )
    versions.add_argument("base_path", help="e.g. models/imdb")
    versions.add_argument(
        "--latest", action="store_true", help="print only the highest; exit 1 if there is none"
    )
    return parser


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
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    if args.command == "versions":
        return _versions(args)

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
