"""Where training data comes from when the user does not say: a local copy, the official
archive, or a small demo set that this project writes itself.

Order of ``resolve_data``:
1. the path the user gave (``--data PATH`` / ``make train DATA=PATH``);
2. a copy already under ``data/``: ``IMDB Dataset.csv[.gz]``, ``aclImdb/`` or
   ``aclImdb_v1.tar.gz`` (extracted on first use);
3. the official ``aclImdb_v1.tar.gz``, downloaded with a progress bar and a SHA-256 check;
4. the demo set from ``training.demo_data``, reported as a demo.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from training import demo_data

logger = logging.getLogger(__name__)

# The Large Movie Review Dataset (Maas et al., 2011) and its published SHA-256.
ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
ACLIMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
ACLIMDB_ARCHIVE_NAME = "aclImdb_v1.tar.gz"
ACLIMDB_FOLDER_NAME = "aclImdb"
# Kaggle's file names for the same 50k reviews.
KAGGLE_FILE_NAMES = ("IMDB Dataset.csv", "IMDB Dataset.csv.gz")
# Seconds to wait for the server to answer (connect, and between received bytes).
DOWNLOAD_TIMEOUT_SECONDS = 15
DOWNLOAD_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class DataSource:
    """A dataset to train on, and how it was found."""

    path: Path
    # One of "given", "local copy", "downloaded", "demo".
    origin: str

    @property
    def is_demo(self) -> bool:
        return self.origin == "demo"

    def describe(self) -> str:
        if self.is_demo:
            return (
                f"the built-in DEMO set ({self.path}): a few hundred short synthetic reviews, "
                "enough to exercise the pipeline, not to judge accuracy"
            )
        return f"{self.path} ({self.origin})"


class DownloadError(Exception):
    """The archive could not be fetched or failed its checksum."""


def resolve_data(
    data: str | Path | None,
    data_dir: str | Path = "data",
    download: bool = True,
    url: str = ACLIMDB_URL,
    sha256: str = ACLIMDB_SHA256,
) -> DataSource:
    """Finds the training data in the order of the module docstring.

    Args:
        data: a path the user gave, or None (or "auto") to search.
        data_dir: where local copies live and downloads go.
        download: whether to try the network before falling back to the demo set.
        url, sha256: the archive to download and its expected checksum.

    Raises:
        ValueError: ``data`` was given but does not exist.
    """
    if data is not None and str(data) != "auto":
        path = Path(data)
        if not path.exists():
            raise ValueError(f"{path}: no such file or folder (given as the training data)")
        return DataSource(path, "given")
    data_dir = Path(data_dir)
    local = _find_local_copy(data_dir)
    if local is not None:
        return DataSource(local, "local copy")
    if download:
        try:
            archive = download_file(url, data_dir / ACLIMDB_ARCHIVE_NAME, sha256)
            return DataSource(extract_aclimdb(archive, data_dir), "downloaded")
        except DownloadError as error:
            logger.warning("Could not download the IMDB archive (%s); using the demo set", error)
    return DataSource(demo_data.write_demo_csv(data_dir / "demo" / "reviews.csv"), "demo")


def _find_local_copy(data_dir: Path) -> Path | None:
    for name in KAGGLE_FILE_NAMES:
        if (data_dir / name).is_file():
            return data_dir / name
    folder = data_dir / ACLIMDB_FOLDER_NAME
    if (folder / "train").is_dir():
        return folder
    archive = data_dir / ACLIMDB_ARCHIVE_NAME
    if archive.is_file():
        return extract_aclimdb(archive, data_dir)
    return None


def download_file(url: str, destination: str | Path, sha256: str) -> Path:
    """Downloads ``url`` to ``destination`` with a progress bar and verifies its SHA-256.

    The bytes go to ``<destination>.part`` first; only a complete file with the right checksum
    is renamed to ``destination``, so an interrupted or corrupted download is never mistaken
    for a good one.

    Raises:
        DownloadError: network failure, HTTP error or checksum mismatch.
    """
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    digest = hashlib.sha256()
    logger.info("Downloading %s", url)
    try:
        with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT_SECONDS) as response:
            response.raise_for_status()
            total = int(response.headers.get("Content-Length", 0)) or None
            with (
                partial.open("wb") as file,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    desc=destination.name,
                    disable=None if sys.stderr.isatty() else True,
                ) as progress,
            ):
                for chunk in response.iter_content(DOWNLOAD_CHUNK_BYTES):
                    file.write(chunk)
                    digest.update(chunk)
                    progress.update(len(chunk))
    except (requests.RequestException, OSError) as error:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{url}: {error}") from error
    if digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: SHA-256 {digest.hexdigest()} does not match the expected {sha256}"
        )
    partial.rename(destination)
    return destination


def extract_aclimdb(archive: str | Path, data_dir: str | Path) -> Path:
    """Extracts ``aclImdb_v1.tar.gz`` into ``<data_dir>/aclImdb`` and returns that folder.

    Extraction goes to a temporary folder first and uses tarfile's "data" filter, which refuses
    absolute paths, ``..`` and links out of the folder.
    """
    archive, data_dir = Path(archive), Path(data_dir)
    target = data_dir / ACLIMDB_FOLDER_NAME
    if (target / "train").is_dir():
        return target
    staging = data_dir / f".{ACLIMDB_FOLDER_NAME}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("Extracting %s", archive)
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"{archive}: cannot extract the archive: {error}") from error
    extracted = staging / ACLIMDB_FOLDER_NAME
    if not (extracted / "train").is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        raise ValueError(f"{archive}: no {ACLIMDB_FOLDER_NAME}/train folder inside the archive")
    extracted.rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target
