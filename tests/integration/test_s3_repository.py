"""The S3 model repository and the EKS sync sidecar, against moto's S3-compatible server on
loopback with boto3, the real S3 client (nothing leaves the machine)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from serving.repository import (
    MANIFEST_NAME,
    RepositoryError,
    S3Repository,
    open_repository,
    verify_copy,
)
from serving.rollout.state import initial_config, with_state, write_config
from serving.s3_sync import STAGING_PREFIX
from serving.versions import list_versions
from tests.helpers import PROJECT_ROOT, free_port, wait_for

# The S3 code does not depend on the model family: one tiny export is enough.
MLP_ONLY = pytest.mark.parametrize("trained_model", ["mlp"], indirect=True)
BUCKET = "models-test"
REPOSITORY = f"s3://{BUCKET}/imdb"


@pytest.fixture(scope="module")
def s3_endpoint() -> str:
    """moto's S3 server on a free loopback port, with fake credentials in the environment."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per S3 call otherwise

    fake = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    saved = {key: os.environ.get(key) for key in fake}
    os.environ.update(fake)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def bucket(s3_endpoint) -> S3Repository:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    yield S3Repository(REPOSITORY, endpoint_url=s3_endpoint)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def sync(s3_endpoint: str, config: Path, target: Path, *extra: str, **popen) -> list[str]:
    return [
        sys.executable, "-m", "serving.s3_sync", "--repository", REPOSITORY,
        "--s3-endpoint-url", s3_endpoint, "--model-config", str(config),
        "--target", str(target), *extra,
    ]  # fmt: skip


def run_sync(s3_endpoint: str, config: Path, target: Path, *extra: str):
    return subprocess.run(
        sync(s3_endpoint, config, target, "--once", *extra),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@MLP_ONLY
def test_publish_lists_only_complete_versions_and_refuses_to_overwrite(bucket, exported_version):
    manifest = bucket.publish(exported_version, 1)
    assert bucket.published_versions() == [1]
    assert bucket.manifest(1) == manifest
    assert {entry.path for entry in manifest.files} >= {"saved_model.pb"}
    # Files without a manifest are an upload in progress (or abandoned): not published.
    bucket._client.put_object(Bucket=BUCKET, Key="imdb/2/saved_model.pb", Body=b"partial")
    assert bucket.published_versions() == [1]
    assert bucket.manifest(2) is None
    with pytest.raises(RepositoryError, match="already published"):
        bucket.publish(exported_version, 1)


def test_unreachable_or_missing_bucket_is_a_clear_error(s3_endpoint):
    with pytest.raises(RepositoryError, match="cannot list the repository"):
        S3Repository("s3://no-such-bucket/imdb", endpoint_url=s3_endpoint).published_versions()
    with pytest.raises(RepositoryError, match="cannot list the repository"):
        S3Repository(
            REPOSITORY, endpoint_url=f"http://127.0.0.1:{free_port()}"
        ).published_versions()
    unreachable = S3Repository(REPOSITORY, endpoint_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(
        RepositoryError, match=r"cannot read s3://models-test/imdb/1/PUBLISHED\.json"
    ):
        unreachable.manifest(1)
    with pytest.raises(RepositoryError, match="unsupported repository scheme"):
        open_repository("ftp://example.com/imdb")


def test_an_upload_that_boto3_cannot_finish_is_a_repository_error(s3_endpoint, tmp_path):
    """boto3's transfer layer turns a failed PutObject into S3UploadFailedError (a boto3, not a
    botocore, exception): publish reports it as one RepositoryError naming the object."""
    version = tmp_path / "4"
    version.mkdir()
    (version / "saved_model.pb").write_bytes(b"graph")
    missing_bucket = S3Repository("s3://no-such-bucket/imdb", endpoint_url=s3_endpoint)
    with pytest.raises(RepositoryError) as error:
        missing_bucket.publish(version, 4)
    message = str(error.value)
    assert "cannot upload" in message and "s3://no-such-bucket/imdb/4/saved_model.pb" in message
    assert "NoSuchBucket" in message


@MLP_ONLY
def test_sync_fetches_named_versions_and_prunes_the_rest(bucket, exported_version, tmp_path):
    for version in (1, 2, 3):
        bucket.publish(exported_version, version)
    config = tmp_path / "models.config"
    target = tmp_path / "models" / "imdb"
    base = initial_config("/models/imdb", 1)
    write_config(config, with_state(base, [1, 2], {"stable": 1, "canary": 2}))

    result = run_sync(bucket._client.meta.endpoint_url, config, target, "--prune-grace-seconds=0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list_versions(target) == [1, 2]
    verify_copy(target / "2", bucket.manifest(2))
    assert "Fetched version 2" in result.stdout

    # Promote-then-rollback state: only version 1 named; 2 goes, 1 is never touched.
    write_config(config, with_state(base, [1], {"stable": 1}))
    result = run_sync(bucket._client.meta.endpoint_url, config, target, "--prune-grace-seconds=0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list_versions(target) == [1]
    assert "Deleted version 2: models.config no longer names it" in result.stdout

    # A named version that is not published: exit 1, one clear line, nothing lost.
    write_config(config, with_state(base, [1, 9], {"stable": 1}))
    result = run_sync(bucket._client.meta.endpoint_url, config, target)
    assert result.returncode == 1
    assert "names version 9, which is not published in s3://models-test/imdb" in result.stdout
    assert list_versions(target) == [1]

    # A config with a syntax error: nothing changes.
    config.write_text("model_config_list { oops")
    result = run_sync(bucket._client.meta.endpoint_url, config, target)
    assert result.returncode == 1
    assert "Keeping the last good config" in result.stdout
    assert list_versions(target) == [1]


@MLP_ONLY
def test_killed_mid_copy_never_shows_a_partial_version(bucket, exported_version, tmp_path):
    """SIGKILL the sync while it downloads a large version; TF Serving's folder never holds a
    version that is not complete, and the next run finishes the job."""
    large = tmp_path / "large"
    shutil.copytree(exported_version, large)
    (large / "assets.extra" / "padding.bin").write_bytes(os.urandom(192 * 1024 * 1024))
    bucket.publish(large, 5)
    manifest = bucket.manifest(5)
    config = tmp_path / "models.config"
    write_config(config, initial_config("/models/imdb", 5))
    target = tmp_path / "models" / "imdb"

    partial_seen: list[str] = []
    watching = threading.Event()

    def watch() -> None:  # what TF Serving would see, polled as fast as Python can
        while not watching.is_set():
            for version in list_versions(target):
                try:
                    verify_copy(target / str(version), manifest)
                except RepositoryError as error:
                    partial_seen.append(str(error))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    process = subprocess.Popen(
        sync(bucket._client.meta.endpoint_url, config, target, "--interval", "60"),
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: any(
                child.name.startswith(STAGING_PREFIX) and (child / "assets.extra").exists()
                for child in (target.iterdir() if target.exists() else [])
            ),
            timeout=120,
            what="the sync to start copying",
        )
        process.send_signal(signal.SIGKILL)  # while the 192 MB file is on its way
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert list_versions(target) == [], "a version appeared before its copy was complete"
    assert any(child.name.startswith(STAGING_PREFIX) for child in target.iterdir())

    result = run_sync(bucket._client.meta.endpoint_url, config, target)
    watching.set()
    watcher.join(timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "left by an interrupted sync" in result.stdout
    assert list_versions(target) == [5]
    verify_copy(target / "5", manifest)
    assert (target / "5" / MANIFEST_NAME).is_file()
    assert not [c for c in target.iterdir() if c.name.startswith(".")]
    assert partial_seen == []


@MLP_ONLY
def test_sidecar_loop_marks_ready_and_stops_on_sigterm(bucket, exported_version, tmp_path):
    bucket.publish(exported_version, 1)
    config = tmp_path / "models.config"
    write_config(config, initial_config("/models/imdb", 1))
    target = tmp_path / "models" / "imdb"
    ready = tmp_path / "models" / ".ready"
    process = subprocess.Popen(
        sync(bucket._client.meta.endpoint_url, config, target, "--ready-file", str(ready)),
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(ready.exists, timeout=120, what="the ready file")
        assert list_versions(target) == [1]
        bucket.publish(exported_version, 2)
        write_config(config, with_state(initial_config("/models/imdb", 1), [1, 2], {"stable": 1}))
        wait_for(lambda: list_versions(target) == [1, 2], timeout=60, what="version 2 synced")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "Stopped" in output
    # One line per fetched version, the start, the first sync, the stop, and boto3's line
    # naming the credential source: no line per idle pass.
    lines = output.strip().splitlines()
    assert sum("Fetched version" in line for line in lines) == 2
    assert len(lines) <= 6, output
