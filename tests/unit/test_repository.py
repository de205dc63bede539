"""S3Repository's failures: every boto3 or botocore error, the transfer layer's included, is a
RepositoryError naming the operation, the object and the cause (a stub client stands in for
S3; tests/integration/test_s3_repository.py runs the real client against moto)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from botocore.exceptions import ClientError

from serving.repository import FileEntry, Manifest, RepositoryError, S3Repository

BUCKET = "models-test"


class FailingTransfers:
    """An S3 client with an empty bucket whose managed transfers fail the way boto3's transfer
    layer fails: ``upload_file`` with S3UploadFailedError, ``download_file`` with
    RetriesExceededError (both boto3 exceptions, not botocore ones)."""

    # boto3's keyword names (Bucket, Key, Filename): the repository passes them by keyword.
    def head_object(self, **call: object) -> dict:
        raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")

    def upload_file(self, **call: object) -> None:
        raise S3UploadFailedError(
            f"Failed to upload {call['Filename']} to {call['Bucket']}/{call['Key']}: An error "
            "occurred (SlowDown) when calling the PutObject operation: Please reduce your "
            "request rate."
        )

    def download_file(self, **call: object) -> None:
        raise RetriesExceededError(ConnectionResetError(104, "Connection reset by peer"))


@pytest.fixture
def repository(monkeypatch) -> S3Repository:
    for name, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }.items():
        monkeypatch.setenv(name, value)
    repository = S3Repository(f"s3://{BUCKET}/imdb", endpoint_url="http://127.0.0.1:9")
    repository._client = FailingTransfers()
    return repository


def test_a_failed_upload_is_a_repository_error_naming_the_object_and_cause(repository, tmp_path):
    version = tmp_path / "3"
    version.mkdir()
    (version / "saved_model.pb").write_bytes(b"graph")
    with pytest.raises(RepositoryError) as error:
        repository.publish(version, 3)
    message = str(error.value)
    assert message.startswith("cannot upload")
    assert f"s3://{BUCKET}/imdb/3/saved_model.pb" in message
    assert "SlowDown" in message  # the cause
    assert isinstance(error.value.__cause__, S3UploadFailedError)


def test_a_failed_download_is_a_repository_error_naming_the_object_and_cause(repository, tmp_path):
    manifest = Manifest(7, (FileEntry("variables/variables.index", 5, "0" * 64),), 0.0)
    with pytest.raises(RepositoryError) as error:
        repository.download(manifest, tmp_path / "copy")
    message = str(error.value)
    assert message.startswith("cannot download")
    assert f"s3://{BUCKET}/imdb/7/variables/variables.index" in message
    assert "Connection reset by peer" in message  # the last attempt's error, not just "retries"
    assert isinstance(error.value.__cause__, RetriesExceededError)
    assert not Path(tmp_path / "copy" / "PUBLISHED.json").exists()
