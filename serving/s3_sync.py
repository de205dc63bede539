"""The EKS model sync sidecar: brings the versions that ``models.config`` names from
``s3://…`` into the pod's model base path, because stock TF Serving cannot read S3 (since 2.7).

    python -m serving.s3_sync --repository s3://BUCKET/imdb \\
        --model-config /etc/tfserving/repository/models.config --target /models/imdb

Every ``--interval`` seconds, and whenever ``models.config`` changes:

1. read ``models.config`` (the mounted ConfigMap). The versions it names (its ``specific``
   policy and its labels) are wanted; with ``latest {num_versions: k}`` the k highest published
   versions are. An unreadable config changes nothing: the last good one stays in force.
2. fetch each wanted version that the target lacks: download into a hidden staging folder
   (``.sync-N-…``, which TF Serving ignores), check every file's size and SHA-256 against the
   version's manifest (``serving/repository.py``), then ``rename`` it into place. A sync killed
   mid-copy leaves only a hidden folder, removed at the next start: a partial version never
   appears where TF Serving looks.
3. delete versions that no config has named for ``--prune-grace-seconds`` (TF Serving reloads
   its config on its own clock; the grace lets it unload first). A version that the current
   config names is never deleted.

Memory is bounded by boto3's streamed transfers (4 x 8 MiB); disk by the wanted versions plus
one staging copy. It logs one line per fetched or deleted version and per error, nothing while
idle. A pass that fails, on S3 or on the disk (full, no permission, a folder gone), is one
error line and the next pass tries again: only a start-up error (a malformed ``--repository``
or endpoint, a ``--ready-file`` that cannot be reset) ends the sidecar, with exit code 2.

``--ready-file`` is removed at start and created after this process's first complete pass: the
Pod's startupProbe waits for it, so TF Serving starts with its versions on disk, and a file left
on the volume by a container that ran before a restart does not count.

It runs as ``python -m serving.s3_sync`` from any working directory where ``serving`` is
importable: the image puts it on ``PYTHONPATH``.

Dependencies: boto3, protobuf and tensorflow-serving-api's config protos (no TensorFlow), which
is what ``docker/sync.Dockerfile`` installs.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2

from serving.contract import MODEL_NAME
from serving.model_config import ModelConfigError, model_entry, read_model_server_config
from serving.repository import RepositoryError, S3Repository, verify_copy
from serving.versions import version_folders

logger = logging.getLogger("s3_sync")

STAGING_PREFIX = ".sync-"


def wanted_versions(model: model_server_config_pb2.ModelConfig, published: list[int]) -> set[int]:
    """The versions a pod needs on disk for this model config."""
    policy = model.model_version_policy
    labelled = set(model.version_labels.values())
    kind = policy.WhichOneof("policy_choice")
    if kind == "specific":
        return set(policy.specific.versions) | labelled
    if kind == "all":
        return set(published) | labelled
    count = max(policy.latest.num_versions, 1) if kind == "latest" else 1
    return set(sorted(published)[-count:]) | labelled


@dataclass
class Syncer:
    repository: S3Repository
    model_config: Path
    target: Path
    model_name: str = MODEL_NAME
    prune_grace_seconds: float = 300.0
    # version -> monotonic time it was first seen unwanted.
    _unwanted_since: dict[int, float] = field(default_factory=dict)
    _wanted: set[int] | None = None
    _reported: set[str] = field(default_factory=set)

    def remove_abandoned_staging(self) -> None:
        try:
            children = list(self.target.iterdir()) if self.target.is_dir() else []
        except OSError as error:  # the first pass reports it, and retries
            logger.warning("Cannot look for interrupted syncs in %s: %s", self.target, error)
            return
        for child in children:
            if child.name.startswith(STAGING_PREFIX):
                logger.warning("Removing %s, left by an interrupted sync", child)
                shutil.rmtree(child, ignore_errors=True)

    def sync_pass(self) -> bool:
        """One pass of the sidecar: ``sync_once``, with a failure of the whole pass (S3, or the
        disk: full, no permission, a folder gone) logged once, not raised, so that the next
        pass tries again. True when every wanted version is on disk."""
        try:
            complete = self.sync_once()
        except (RepositoryError, OSError) as error:
            self.report("pass", f"Sync pass failed, retrying at the next pass: {error}")
            return False
        self.clear("pass")
        return complete

    def sync_once(self) -> bool:
        """One pass; True when every wanted version is on disk. A version that cannot be
        fetched (S3 or the disk failed) is logged and left for the next pass; the others are
        still fetched and pruned.

        Raises:
            RepositoryError: the repository cannot be listed.
            OSError: the target folder cannot be created or listed.
        """
        self.target.mkdir(parents=True, exist_ok=True)
        try:
            model = model_entry(read_model_server_config(self.model_config), self.model_name)
        except ModelConfigError as error:
            self.report(f"config: {error}", f"Keeping the last good config: {error}")
            if self._wanted is None:
                return False
        else:
            self._reported = {key for key in self._reported if not key.startswith("config:")}
            published = (
                self.repository.published_versions()
                if model.model_version_policy.WhichOneof("policy_choice") != "specific"
                else []
            )
            self._wanted = wanted_versions(model, published)
        wanted = self._wanted or set()
        local = version_folders(self.target)
        complete = True
        for version in sorted(wanted - set(local)):
            try:
                self._fetch(version)
            except (RepositoryError, OSError) as error:
                complete = False
                self.report(f"fetch {version}", f"Cannot fetch version {version}: {error}")
        self._prune(wanted, version_folders(self.target))
        return complete

    def _fetch(self, version: int) -> None:
        manifest = self.repository.manifest(version)
        if manifest is None:
            raise RepositoryError(
                f"models.config names version {version}, which is not published in "
                f"{self.repository.url}"
            )
        started = time.monotonic()
        staging = self.target / f"{STAGING_PREFIX}{version}-{time.time_ns()}"
        try:
            self.repository.download(manifest, staging)
            verify_copy(staging, manifest)
            staging.rename(self.target / str(version))  # atomic: whole version or nothing
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._reported.discard(f"fetch {version}")
        logger.info(
            "Fetched version %d (%d files, %.1f MB) from %s in %.1f s",
            version,
            len(manifest.files),
            manifest.total_bytes / 1e6,
            self.repository.version_url(version),
            time.monotonic() - started,
        )

    def _prune(self, wanted: set[int], local: dict[int, Path]) -> None:
        now = time.monotonic()
        for version in list(self._unwanted_since):
            if version in wanted or version not in local:
                del self._unwanted_since[version]
        for version, folder in local.items():
            if version in wanted:
                continue
            since = self._unwanted_since.setdefault(version, now)
            if now - since >= self.prune_grace_seconds:
                # Rename first (instant), so TF Serving never sees a half-deleted version.
                doomed = self.target / f"{STAGING_PREFIX}deleted-{version}-{time.time_ns()}"
                folder.rename(doomed)
                shutil.rmtree(doomed, ignore_errors=True)
                del self._unwanted_since[version]
                logger.info("Deleted version %d: models.config no longer names it", version)

    def clear(self, key: str) -> None:
        self._reported.discard(key)

    def report(self, key: str, message: str) -> None:
        """Logs an error once until it clears (a sync loop must not flood the log)."""
        if key not in self._reported:
            self._reported.add(key)
            logger.error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m serving.s3_sync", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--repository", required=True, help="s3://bucket/prefix of the model")
    parser.add_argument("--model-config", required=True, type=Path, help="models.config to follow")
    parser.add_argument("--target", required=True, type=Path, help="the model base path to fill")
    parser.add_argument("--model-name", default=MODEL_NAME)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between passes")
    parser.add_argument("--prune-grace-seconds", type=float, default=300.0)
    parser.add_argument(
        "--ready-file", type=Path, help="removed at start, created after the first complete pass"
    )
    parser.add_argument("--once", action="store_true", help="one pass, then exit (0: complete)")
    parser.add_argument("--s3-endpoint-url", help="an S3-compatible endpoint (tests, MinIO)")
    return parser


def reset_ready_file(path: Path) -> None:
    """Removes the ready file a previous container left on the volume.

    Raises:
        OSError: it exists and cannot be removed.
    """
    path.unlink(missing_ok=True)


def mark_ready(syncer: Syncer, path: Path) -> None:
    """Creates the ready file after the first complete pass (once); a failure is logged and the
    next complete pass tries again."""
    if path.exists():
        return
    try:
        path.touch()
    except OSError as error:
        syncer.report("ready", f"Cannot create --ready-file {path}, retrying: {error}")
        return
    syncer.clear("ready")
    logger.info("First sync complete: %s", path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    # Start-up errors are fatal (exit 2): a restart cannot fix them, and the message says why.
    if not args.repository.startswith("s3://"):
        print(
            f"s3_sync: --repository must be s3://bucket/prefix, got {args.repository}",
            file=sys.stderr,
        )
        return 2
    try:
        repository = S3Repository(args.repository, endpoint_url=args.s3_endpoint_url)
    except RepositoryError as error:
        print(f"s3_sync: {error}", file=sys.stderr)
        return 2
    if args.ready_file:
        try:
            reset_ready_file(args.ready_file)
        except OSError as error:
            print(
                f"s3_sync: cannot remove the previous --ready-file {args.ready_file}: {error}; "
                "the startupProbe would pass before this container's first sync",
                file=sys.stderr,
            )
            return 2
    syncer = Syncer(
        repository, args.model_config, args.target, args.model_name, args.prune_grace_seconds
    )
    syncer.remove_abandoned_staging()
    if args.once:
        complete = syncer.sync_pass()
        if complete and args.ready_file:
            mark_ready(syncer, args.ready_file)
        return 0 if complete else 1

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logger.info("Syncing %s into %s, following %s", args.repository, args.target, args.model_config)
    last_config = None
    next_pass = 0.0
    while not stop.is_set():
        try:
            config_stamp = args.model_config.stat().st_mtime_ns
        except OSError:
            config_stamp = None
        if config_stamp != last_config or time.monotonic() >= next_pass:
            last_config = config_stamp
            next_pass = time.monotonic() + args.interval
            if syncer.sync_pass() and args.ready_file:
                mark_ready(syncer, args.ready_file)
        stop.wait(1.0)
    logger.info("Stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
