"""The model repository: where published versions live when the servers read them from a bucket
(or a shared folder) instead of from the image. docs/deploy.md, "Model repository mode".

The layout is TF Serving's model base path, the same in a folder, on ``gs://`` and on ``s3://``::

    <repository>/<N>/saved_model.pb, variables/, assets.extra/ ...   version N, as exported
    <repository>/<N>/PUBLISHED.json                                   written last: the manifest

A version is **published** once its manifest exists. The manifest lists every file with its size
and SHA-256, so a reader can tell a complete copy from a partial one. Nothing names a version in
``models.config`` (``serving/rollout/``) or copies it to a pod (``serving/s3_sync.py``) before
it is published, so a half-uploaded version is never loaded. Published versions are immutable:
publishing the same number twice is refused.

- A folder (``/srv/models/imdb``, ``file:///srv/models/imdb``): files go to a hidden staging
  folder, then one ``rename`` makes the version appear complete.
- ``gs://bucket/prefix``: TF Serving reads it natively (Workload Identity on GKE). Written with
  ``tf.io.gfile``; GCS has no rename, so the manifest is the commit point.
- ``s3://bucket/prefix``: stock TF Serving cannot read S3 (since 2.7), so pods get versions from
  the sync sidecar. Written with boto3, manifest last.

This module imports neither TensorFlow nor boto3 at import time: the sync sidecar image carries
boto3 only, and the folder backend needs neither.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from serving.versions import version_folders, version_number

MANIFEST_NAME = "PUBLISHED.json"
MANIFEST_FORMAT = 1
# Read and hash files in pieces of this size: memory stays bounded whatever the model size.
CHUNK_BYTES = 8 * 1024 * 1024


class RepositoryError(Exception):
    """A repository operation failed; the message names the repository and the cause."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the version folder, '/'-separated
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    version: int
    files: tuple[FileEntry, ...]
    published_at: float

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "version": self.version,
                "published_at": self.published_at,
                "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> Manifest:
        try:
            data = json.loads(text)
            files = tuple(
                FileEntry(str(item["path"]), int(item["size"]), str(item["sha256"]))
                for item in data["files"]
            )
            manifest = cls(int(data["version"]), files, float(data.get("published_at", 0)))
        except (ValueError, KeyError, TypeError) as error:
            raise RepositoryError(f"{where}: not a valid {MANIFEST_NAME}: {error}") from error
        for entry in files:
            parts = entry.path.split("/")
            if entry.path.startswith("/") or ".." in parts or "" in parts:
                raise RepositoryError(f"{where}: unsafe path {entry.path!r} in the manifest")
        return manifest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(version_dir: Path, version: int) -> Manifest:
    """The manifest of a local version folder (every regular file, sorted)."""
    files = []
    for path in sorted(p for p in version_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(version_dir).as_posix()
        if relative == MANIFEST_NAME:
            continue
        files.append(FileEntry(relative, path.stat().st_size, file_sha256(path)))
    if not files:
        raise RepositoryError(f"{version_dir} holds no files")
    return Manifest(version, tuple(files), time.time())


def verify_copy(folder: Path, manifest: Manifest) -> None:
    """Checks that ``folder`` holds exactly the manifest's files with their sizes and hashes.

    Raises:
        RepositoryError: naming the first missing, extra or different file.
    """
    for entry in manifest.files:
        path = folder / entry.path
        if not path.is_file():
            raise RepositoryError(f"{folder}: {entry.path} is missing")
        if path.stat().st_size != entry.size:
            raise RepositoryError(
                f"{folder}: {entry.path} has {path.stat().st_size} bytes, expected {entry.size}"
            )
        if file_sha256(path) != entry.sha256:
            raise RepositoryError(f"{folder}: {entry.path} does not match its SHA-256")


class Repository(Protocol):
    url: str

    def published_versions(self) -> list[int]:
        """The published versions, ascending."""
        ...

    def manifest(self, version: int) -> Manifest | None:
        """The manifest of a version, or None if it is not published."""
        ...

    def publish(self, version_dir: Path, version: int) -> Manifest:
        """Uploads a local version folder as ``version``; returns its manifest."""
        ...

    def version_url(self, version: int) -> str: ...


def _check_new_version(repository: Repository, version: int) -> None:
    if version_number(str(version)) is None:
        raise RepositoryError(f"{version} is not a valid version number")
    if repository.manifest(version) is not None:
        raise RepositoryError(
            f"version {version} is already published in {repository.url}; published versions "
            "are immutable: export a new version"
        )


class FolderRepository:
    """A repository in a local or mounted folder, which is also the servers' model base path."""

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()
        self.url = str(self.path)

    def version_url(self, version: int) -> str:
        return str(self.path / str(version))

    def _versions(self) -> dict[int, Path]:
        try:
            return version_folders(self.path)
        except FileNotFoundError:
            return {}

    def published_versions(self) -> list[int]:
        versions = self._versions().items()
        return sorted(n for n, folder in versions if (folder / MANIFEST_NAME).is_file())

    def manifest(self, version: int) -> Manifest | None:
        folder = self._versions().get(version)
        if folder is None or not (folder / MANIFEST_NAME).is_file():
            return None
        where = str(folder / MANIFEST_NAME)
        return Manifest.from_json((folder / MANIFEST_NAME).read_text(), where)

    def publish(self, version_dir: Path, version: int) -> Manifest:
        _check_new_version(self, version)
        target = self.path / str(version)
        if target.exists():
            raise RepositoryError(
                f"{target} exists but is not published (no {MANIFEST_NAME}): it was not made "
                "by `publish`; move it away first"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        staging = self.path / f".publish-{version}-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(version_dir, staging)
            manifest = build_manifest(staging, version)
            (staging / MANIFEST_NAME).write_text(manifest.to_json())
            os.rename(staging, target)  # atomic: the version appears complete or not at all
        except OSError as error:
            raise RepositoryError(f"cannot publish into {target}: {error}") from error
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest


class GcsRepository:
    """``gs://bucket/prefix``, written with ``tf.io.gfile`` (TF's own GCS file system)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        import tensorflow as tf

        self._gfile = tf.io.gfile

    def version_url(self, version: int) -> str:
        return f"{self.url}/{version}"

    def published_versions(self) -> list[int]:
        try:
            children = self._gfile.listdir(self.url) if self._gfile.exists(self.url) else []
        except Exception as error:  # tf.errors.OpError and friends
            raise RepositoryError(f"cannot list {self.url}: {error}") from error
        numbers = (version_number(child.rstrip("/")) for child in children)
        return sorted(
            n
            for n in numbers
            if n is not None and self._gfile.exists(f"{self.url}/{n}/{MANIFEST_NAME}")
        )

    def manifest(self, version: int) -> Manifest | None:
        where = f"{self.url}/{version}/{MANIFEST_NAME}"
        try:
            if not self._gfile.exists(where):
                return None
            with self._gfile.GFile(where, "r") as stream:
                return Manifest.from_json(stream.read(), where)
        except RepositoryError:
            raise
        except Exception as error:
            raise RepositoryError(f"cannot read {where}: {error}") from error

    def publish(self, version_dir: Path, version: int) -> Manifest:
        _check_new_version(self, version)
        manifest = build_manifest(version_dir, version)
        target = self.version_url(version)
        try:
            for entry in manifest.files:
                destination = f"{target}/{entry.path}"
                self._gfile.makedirs(destination.rsplit("/", 1)[0])
                self._gfile.copy(str(version_dir / entry.path), destination, overwrite=True)
            with self._gfile.GFile(f"{target}/{MANIFEST_NAME}", "w") as stream:
                stream.write(manifest.to_json())
        except Exception as error:
            raise RepositoryError(f"cannot publish into {target}: {error}") from error
        return manifest


class S3Repository:
    """``s3://bucket/prefix``, written and read with boto3 (credentials from its usual chain:
    IRSA or EKS Pod Identity in a pod, a profile or environment variables on a laptop)."""

    def __init__(self, url: str, endpoint_url: str | None = None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        parsed = urlparse(url)
        if not parsed.netloc:
            raise RepositoryError(f"{url}: expected s3://bucket/prefix")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or None
        try:
            self._client = boto3.client(
                "s3",
                endpoint_url=endpoint_url,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10),
            )
        except (*_boto_errors(), ValueError) as error:  # ValueError: a malformed endpoint URL
            raise RepositoryError(
                f"cannot create an S3 client for {url} (endpoint {endpoint_url or 'AWS'}): "
                f"{_cause(error)}"
            ) from error
        # Streamed multipart transfers: at most 4 x 8 MiB in memory at a time.
        self._transfer = TransferConfig(
            multipart_threshold=CHUNK_BYTES, multipart_chunksize=CHUNK_BYTES, max_concurrency=4
        )

    def version_url(self, version: int) -> str:
        return f"{self.url}/{version}"

    def _key(self, *parts: object) -> str:
        return (
            "/".join([self.prefix, *map(str, parts)]) if self.prefix else "/".join(map(str, parts))
        )

    def _call(self, operation: str, key: str, function: Any, **kwargs: Any) -> Any:
        """``function(**kwargs)``, with any boto3 or botocore failure raised as a RepositoryError
        that reads "<operation> s3://bucket/key: <cause>"."""
        try:
            return function(**kwargs)
        except _boto_errors() as error:
            raise RepositoryError(
                f"{operation} s3://{self.bucket}/{key}: {_cause(error)}"
            ) from error

    def published_versions(self) -> list[int]:
        versions = []
        paginator = self._client.get_paginator("list_objects_v2")
        prefix = self._key("") if self.prefix else ""
        pages = self._call(
            "cannot list the repository",
            prefix,
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")),
        )
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                number = version_number(common["Prefix"][len(prefix) :].rstrip("/"))
                if number is not None:
                    versions.append(number)
        return sorted(v for v in versions if self._exists(self._key(v, MANIFEST_NAME)))

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise RepositoryError(f"cannot read s3://{self.bucket}/{key}: {error}") from error
        except _boto_errors() as error:  # no connection, no credentials, ...
            raise RepositoryError(
                f"cannot read s3://{self.bucket}/{key}: {_cause(error)}"
            ) from error
        return True

    def manifest(self, version: int) -> Manifest | None:
        key = self._key(version, MANIFEST_NAME)
        if not self._exists(key):
            return None
        body = self._call(
            "cannot read",
            key,
            lambda: self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read(),
        )
        return Manifest.from_json(body, f"s3://{self.bucket}/{key}")

    def publish(self, version_dir: Path, version: int) -> Manifest:
        _check_new_version(self, version)
        manifest = build_manifest(version_dir, version)
        for entry in manifest.files:
            key = self._key(version, entry.path)
            self._call(
                f"cannot upload {version_dir / entry.path} to",
                key,
                self._client.upload_file,
                Filename=str(version_dir / entry.path),
                Bucket=self.bucket,
                Key=key,
                Config=self._transfer,
            )
        manifest_key = self._key(version, MANIFEST_NAME)
        self._call(
            "cannot write the manifest",
            manifest_key,
            self._client.put_object,
            Bucket=self.bucket,
            Key=manifest_key,
            Body=manifest.to_json().encode(),
        )
        return manifest

    def download(self, manifest: Manifest, folder: Path) -> None:
        """Downloads a published version's files into ``folder`` and verifies them."""
        for entry in manifest.files:
            destination = folder / entry.path
            destination.parent.mkdir(parents=True, exist_ok=True)
            key = self._key(manifest.version, entry.path)
            self._call(
                f"cannot download {destination} from",
                key,
                self._client.download_file,
                Bucket=self.bucket,
                Key=key,
                Filename=str(destination),
                Config=self._transfer,
            )
        (folder / MANIFEST_NAME).write_text(manifest.to_json())
        verify_copy(folder, manifest)


def _boto_errors() -> tuple[type[Exception], ...]:
    """Every exception boto3 raises for a failed call: botocore's (a client error, no
    connection, no credentials, ...) and boto3's own, which its managed transfers raise
    (``S3UploadFailedError``, ``RetriesExceededError``)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (Boto3Error, BotoCoreError, ClientError)


def _cause(error: Exception) -> str:
    """The error's type and text, and for a transfer that ran out of retries the last attempt's
    error (its own text is only "Max Retries Exceeded")."""
    last_attempt = getattr(error, "last_exception", None)
    text = f"{type(error).__name__}: {error}"
    return f"{text}; last attempt: {last_attempt!r}" if last_attempt else text


def open_repository(url: str, s3_endpoint_url: str | None = None) -> Repository:
    """The backend for ``url``: ``s3://…``, ``gs://…``, ``file://…`` or a folder path."""
    scheme = urlparse(url).scheme
    if scheme == "s3":
        return S3Repository(url, endpoint_url=s3_endpoint_url)
    if scheme == "gs":
        return GcsRepository(url)
    if scheme == "file":
        return FolderRepository(urlparse(url).path)
    if scheme == "":
        return FolderRepository(url)
    raise RepositoryError(f"{url}: unsupported repository scheme {scheme!r} (s3, gs, file, path)")
