"""Smoke test of a running endpoint: real TF Serving (compose, a cluster) or the local server.

Waits under a deadline for the model to be AVAILABLE, checks the metadata against the serving
contract, predicts a clearly positive and a clearly negative review over every transport given,
and checks that the transports agree. Prints one line per check; on failure exits 1 with a
one-line reason.
"""

from __future__ import annotations

import argparse
import sys
import time

from serving.cli_args import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    parse_args,
)
from serving.client import (
    Prediction,
    RequestError,
    SentimentClient,
    make_client,
    wait_until_available,
)
from serving.contract import (
    MODEL_NAME,
    NEGATIVE_LABEL,
    POSITIVE_LABEL,
    REQUEST_TIMEOUT_SECONDS,
    signature_problems,
)

CLEARLY_POSITIVE = (
    "A wonderful, moving film with brilliant acting and a beautiful story. "
    "I loved every minute of it. Highly recommended."
)
CLEARLY_NEGATIVE = (
    "An awful, boring film. The plot was predictable and the acting was terrible. "
    "A complete waste of time, avoid it."
)
# Probabilities from two transports of one version must agree this closely (float32 printing).
AGREEMENT_TOLERANCE = 1e-5


class SmokeTestError(Exception):
    """A check failed; the message is the one-line reason."""


def check_endpoint(
    client: SentimentClient, deadline: float, label: str | None = None
) -> tuple[int, list[Prediction]]:
    """Runs every check on one transport (on the version ``label`` names, if given); returns
    the served version and the two predictions."""
    remaining = max(0.0, deadline - time.monotonic())
    versions = wait_until_available(client, remaining)
    available = max(v.version for v in versions if v.state == "AVAILABLE")
    print(f"[{client.transport}] model AVAILABLE, version {available}")
    metadata = client.metadata(label=label)
    if label is not None:
        print(f"[{client.transport}] label {label!r} names version {metadata.version}")
    problems = signature_problems(metadata.inputs, metadata.outputs)
    if problems:
        raise SmokeTestError(
            f"[{client.transport}] signature breaks the contract: " + "; ".join(problems)
        )
    print(f"[{client.transport}] signature matches the contract (version {metadata.version})")
    positive, negative = client.predict([CLEARLY_POSITIVE, CLEARLY_NEGATIVE], label=label)
    print(
        f"[{client.transport}] positive review -> {positive.label} ({positive.probability:.4f}), "
        f"negative review -> {negative.label} ({negative.probability:.4f})"
    )
    if positive.label != POSITIVE_LABEL or negative.label != NEGATIVE_LABEL:
        raise SmokeTestError(
            f"[{client.transport}] wrong labels: clearly positive -> {positive.label}, "
            f"clearly negative -> {negative.label}"
        )
    if not positive.probability > negative.probability:
        raise SmokeTestError(
            f"[{client.transport}] positive review scored {positive.probability:.4f}, not above "
            f"the negative review's {negative.probability:.4f}"
        )
    return metadata.version, [positive, negative]


def run(
    rest_url: str | None,
    grpc_target: str | None,
    model_name: str,
    deadline_seconds: float,
    timeout: float,
    label: str | None = None,
) -> None:
    """All checks; raises SmokeTestError or RequestError with the reason."""
    deadline = time.monotonic() + deadline_seconds
    results = {}
    for rest, target in ((rest_url, None), (None, grpc_target)):
        if rest is None and target is None:
            continue
        client = make_client(rest, target, model_name, timeout)
        try:
            results[client.transport] = check_endpoint(client, deadline, label)
        finally:
            client.close()
    if len(results) == 2:
        (rest_version, rest_predictions), (grpc_version, grpc_predictions) = results.values()
        if rest_version != grpc_version:
            raise SmokeTestError(
                f"REST serves version {rest_version} but gRPC serves {grpc_version}"
            )
        for rest_prediction, grpc_prediction in zip(
            rest_predictions, grpc_predictions, strict=True
        ):
            if rest_prediction.label != grpc_prediction.label or (
                abs(rest_prediction.probability - grpc_prediction.probability) > AGREEMENT_TOLERANCE
            ):
                raise SmokeTestError(
                    f"REST and gRPC disagree: {rest_prediction} vs {grpc_prediction}"
                )
        print("REST and gRPC agree")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rest-url", help="e.g. http://localhost:8501")
    parser.add_argument("--grpc-target", help="e.g. localhost:8500")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument(
        "--deadline", type=float, default=120.0, help="seconds to wait for AVAILABLE (default 120)"
    )
    parser.add_argument(
        "--timeout", type=float, default=REQUEST_TIMEOUT_SECONDS, help="seconds per request"
    )
    parser.add_argument("--label", help="check the version a label names, e.g. canary")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    if not args.rest_url and not args.grpc_target:
        print("smoke test: give --rest-url and/or --grpc-target", file=sys.stderr)
        return EXIT_USAGE
    try:
        run(
            args.rest_url,
            args.grpc_target,
            args.model_name,
            args.deadline,
            args.timeout,
            args.label,
        )
    except (SmokeTestError, RequestError, ValueError) as error:
        print(f"smoke test FAILED: {error}", file=sys.stderr)
        return EXIT_FAILED
    print("smoke test passed")
    return EXIT_OK
