"""Command line of the rollout: ``python -m serving rollout <verb>`` (see ``serving.rollout``).

``publish`` and ``init`` are here whole; ``canary``, ``promote`` and ``rollback`` run the steps
of ``verbs.Rollout`` and print the outcome; ``status`` shows the labels in the file and on every
server. Exit codes: 0 done (a canary that passed), 1 failed (a canary that failed), 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

from serving.cli_args import EXIT_FAILED, EXIT_OK, parse_args
from serving.client import RequestError, RestClient
from serving.contract import MODEL_NAME, REQUEST_TIMEOUT_SECONDS
from serving.loadtest import LoadTestError, read_reviews
from serving.model_config import ModelConfigError
from serving.repository import RepositoryError, open_repository
from serving.rollout import RolloutError
from serving.rollout import __doc__ as overview
from serving.rollout.comparison import Thresholds, compare
from serving.rollout.fleet import KubernetesFleet, LocalFleet
from serving.rollout.state import CANARY, STABLE, initial_config, write_config
from serving.rollout.verbs import Rollout
from serving.versions import version_number


def rest_url(text: str) -> str:
    """An argparse type: a server's REST URL, http(s)://host[:port]."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected a URL like http://host:8501, got {text!r}")
    return text.rstrip("/")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving rollout", description=overview.split("\n")[0]
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    publish = verbs.add_parser("publish", help="check an export and upload it to the repository")
    publish.add_argument("--repository", required=True, help="folder, gs://… or s3://…")
    publish.add_argument("--version-dir", type=Path, required=True, help="e.g. models/imdb/3")
    publish.add_argument("--version", type=int, help="default: the folder's name")
    publish.add_argument("--dry-run", action="store_true")
    init = verbs.add_parser("init", help="write a first models.config (stable = VERSION)")
    init.add_argument("--config", type=Path, required=True, help="the models.config to write")
    init.add_argument("--repository", required=True, help="where versions are published")
    init.add_argument(
        "--base-path", help="the servers' model base path, if not the repository (EKS: the pod's)"
    )
    init.add_argument("--version", type=int, help="default: the highest published")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    for name, text in (
        ("canary", "load a version beside stable, label it canary, smoke-test and compare"),
        ("promote", "move stable to the canary's version (the old one stays as previous)"),
        ("rollback", "withdraw the canary, or move stable back to previous"),
        ("status", "show the labels in models.config and on every server"),
    ):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("--config", type=Path, required=True, help="the models.config to edit")
        verb.add_argument(
            "--model-name", default=MODEL_NAME, help="the model of models.config to roll out"
        )
        target = verb.add_mutually_exclusive_group(required=True)
        target.add_argument(
            "--rest-url", type=rest_url, action="append", help="a server's REST URL (per server)"
        )
        target.add_argument("--namespace", help="Kubernetes: apply the ConfigMap, reach every pod")
        verb.add_argument("--kubectl", default="kubectl")
        verb.add_argument("--timeout", type=float, default=300.0, help="seconds per wait")
        verb.add_argument("--dry-run", action="store_true")
        if name == "canary":
            _add_canary_arguments(verb)
    return parser


def _add_canary_arguments(verb: argparse.ArgumentParser) -> None:
    verb.add_argument("--version", type=int, help="default: the highest published")
    verb.add_argument(
        "--repository", help="default: models.config's base_path (EKS: the s3:// URL)"
    )
    verb.add_argument(
        "--reviews", type=Path, help="reference reviews, text or CSV (default: shipped)"
    )
    verb.add_argument("--max-reviews", type=int, default=1000, help="use at most this many of them")
    defaults = Thresholds()
    for field_name in Thresholds.__dataclass_fields__:
        verb.add_argument(
            "--" + field_name.replace("_", "-"), type=float, default=getattr(defaults, field_name)
        )


def _publish(args: argparse.Namespace) -> None:
    version = args.version if args.version is not None else version_number(args.version_dir.name)
    if version is None:
        raise RolloutError(f"{args.version_dir} is not a version folder: pass --version")
    if not args.version_dir.is_dir():
        raise RolloutError(f"{args.version_dir} does not exist")
    from serving.export_check import ExportCheckError, check_export  # imports TensorFlow

    try:
        check_export(args.version_dir)
    except ExportCheckError as error:
        raise RolloutError(f"refusing to publish: {error}") from error
    repository = open_repository(args.repository)
    if args.dry_run:
        print(f"Would publish {args.version_dir} as version {version} to {repository.url}")
        return
    manifest = repository.publish(args.version_dir, version)
    print(
        f"Published version {version} to {repository.version_url(version)} "
        f"({len(manifest.files)} files, {manifest.total_bytes / 1e6:.1f} MB)"
    )


def _init(args: argparse.Namespace) -> None:
    if args.config.exists() and not args.force:
        raise RolloutError(f"{args.config} exists: pass --force to overwrite it")
    published = open_repository(args.repository).published_versions()
    version = args.version if args.version is not None else (published or [None])[-1]
    if version is None or version not in published:
        raise RolloutError(
            f"version {version} is not published in {args.repository} "
            f"(published: {published or 'none'}): run make publish"
        )
    args.config.parent.mkdir(parents=True, exist_ok=True)
    base_path = args.base_path or args.repository
    write_config(args.config, initial_config(base_path, version))
    print(f"Wrote {args.config}: '{STABLE}' is version {version} of {base_path}")


def _status(rollout: Rollout) -> None:
    _, versions, labels = rollout.state()
    labels = dict(sorted(labels.items()))
    print(f"models.config: versions {versions}, labels {labels}")
    with rollout.fleet.endpoints() as urls:
        for url in urls:
            with RestClient(url, rollout.model_name) as client:
                states = ", ".join(f"{s.version} {s.state}" for s in client.status())
                served = {}
                for label in labels:
                    try:
                        served[label] = client.metadata(label=label).version
                    except RequestError as error:
                        served[label] = error.code
            print(f"{url}: {states}; labels {served}")


def _canary(rollout: Rollout, args: argparse.Namespace) -> bool:
    from serving.smoke import run as smoke

    reviews = read_reviews(args.reviews)[: max(args.max_reviews, 1)]
    version = rollout.canary(args.version, args.repository)
    if rollout.dry_run:
        return True
    with rollout.fleet.endpoints() as urls:
        for url in urls:
            smoke(url, None, rollout.model_name, 60, REQUEST_TIMEOUT_SECONDS, label=CANARY)
        print(f"    smoke test of /labels/{CANARY} passed on {len(urls)} server(s)")
        result = compare(urls, reviews, rollout.model_name)
    limits = Thresholds(**{name: getattr(args, name) for name in Thresholds.__dataclass_fields__})
    checks = result.checks(limits)
    print(
        f"==> Canary version {version} vs {STABLE}: {result.reviews} reference reviews, "
        f"{result.requests} requests to each label"
    )
    for text, ok in checks:
        print(f"    {'ok  ' if ok else 'FAIL'} {text}")
    passed = all(ok for _, ok in checks)
    print(
        "Verdict: PASS - promote with `make promote`"
        if passed
        else "Verdict: FAIL - withdraw with `make rollback-model` (the canary stays up meanwhile)"
    )
    return passed


def main(argv: list[str] | None = None) -> int:
    """Runs one verb. Bad usage is argparse's to report (exit 2): every flag is checked there,
    before any step, so an error raised later is a failed step (1) or a bug (a traceback)."""
    args = parse_args(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        if args.verb == "publish":
            _publish(args)
            return EXIT_OK
        if args.verb == "init":
            _init(args)
            return EXIT_OK
        fleet = (
            KubernetesFleet(args.namespace, args.kubectl, args.timeout)
            if args.namespace
            else LocalFleet(args.rest_url)
        )
        rollout = Rollout(
            args.config,
            fleet,
            dry_run=args.dry_run,
            timeout=args.timeout,
            model_name=args.model_name,
        )
        if args.verb == "status":
            _status(rollout)
        elif args.verb == "canary":
            return EXIT_OK if _canary(rollout, args) else EXIT_FAILED
        elif args.verb == "promote":
            print(f"Promoted: '{STABLE}' is version {rollout.promote()}")
        elif args.verb == "rollback":
            print(f"Rolled back: '{STABLE}' is version {rollout.rollback()}")
    except (RolloutError, RepositoryError, RequestError, LoadTestError, ModelConfigError) as error:
        print(f"rollout: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
