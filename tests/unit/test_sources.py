"""Finding training data: given path, local copy, download (from a local HTTP server), demo."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from training import data, sources


def aclimdb_archive() -> bytes:
    """A tiny aclImdb_v1.tar.gz: aclImdb/train/{pos,neg} with one review each."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for folder, text in (("pos", b"A joy to watch."), ("neg", b"A chore to watch.")):
            info = tarfile.TarInfo(f"aclImdb/train/{folder}/0_8.txt")
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


@pytest.fixture
def archive_server() -> Iterator[tuple[str, bytes]]:
    """(URL, bytes) of the archive served over HTTP on 127.0.0.1; other paths answer 404."""
    payload = aclimdb_archive()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/aclImdb_v1.tar.gz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/aclImdb_v1.tar.gz", payload
    server.shutdown()
    server.server_close()


def test_given_path_wins(tmp_path):
    csv = tmp_path / "given.csv"
    csv.write_text("review,sentiment\nok,positive\n")
    source = sources.resolve_data(str(csv), data_dir=tmp_path / "data", download=False)
    assert (source.path, source.origin) == (csv, "given")


def test_given_path_must_exist(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        sources.resolve_data(tmp_path / "missing.csv", data_dir=tmp_path)


def test_local_kaggle_copy_before_download(tmp_path):
    (tmp_path / "IMDB Dataset.csv").write_text("review,sentiment\nok,positive\n")
    source = sources.resolve_data(None, data_dir=tmp_path, url="http://127.0.0.1:9/none")
    assert source.origin == "local copy" and source.path.name == "IMDB Dataset.csv"


def test_downloads_verifies_and_extracts(tmp_path, archive_server):
    url, payload = archive_server
    source = sources.resolve_data(
        "auto", data_dir=tmp_path, url=url, sha256=hashlib.sha256(payload).hexdigest()
    )
    assert source.origin == "downloaded"
    assert source.path == tmp_path / "aclImdb"
    frame = data.load_reviews(source.path)
    assert sorted(frame["sentiment"]) == ["negative", "positive"]
    # A second run finds the extracted copy and does not download again.
    again = sources.resolve_data("auto", data_dir=tmp_path, url="http://127.0.0.1:9/none")
    assert again.origin == "local copy"


def test_checksum_mismatch_keeps_nothing_and_falls_back_to_demo(tmp_path, archive_server):
    url, _ = archive_server
    with pytest.raises(sources.DownloadError, match="does not match"):
        sources.download_file(url, tmp_path / "a.tar.gz", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []
    source = sources.resolve_data(None, data_dir=tmp_path, url=url, sha256="0" * 64)
    assert source.is_demo and "DEMO" in source.describe()
    assert not (tmp_path / sources.ACLIMDB_ARCHIVE_NAME).exists()


def test_unreachable_server_falls_back_to_demo(tmp_path, archive_server):
    url, _ = archive_server
    source = sources.resolve_data(None, data_dir=tmp_path, url=url.replace("aclImdb", "missing"))
    assert source.is_demo
    assert len(data.load_reviews(source.path)) > 100


def test_no_download_goes_straight_to_demo(tmp_path):
    source = sources.resolve_data(None, data_dir=tmp_path, download=False)
    assert source.is_demo


def test_archive_without_aclimdb_folder_is_rejected(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("other/readme.txt")
        tar.addfile(info, io.BytesIO(b""))
    archive = tmp_path / "aclImdb_v1.tar.gz"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="no aclImdb/train folder"):
        sources.extract_aclimdb(archive, tmp_path)
    assert not (tmp_path / "aclImdb").exists()


def test_demo_set_is_balanced_deterministic_and_valid(tmp_path):
    from training import demo_data

    first = demo_data.write_demo_csv(tmp_path / "a.csv").read_bytes()
    second = demo_data.write_demo_csv(tmp_path / "b.csv").read_bytes()
    assert first == second
    frame = data.load_reviews(tmp_path / "a.csv")
    counts = frame["sentiment"].value_counts()
    assert counts["positive"] == counts["negative"] == demo_data.DEMO_REVIEWS_PER_CLASS
    assert data.find_duplicates(frame).duplicate_rows == 0
    assert Path(tmp_path / "a.csv").stat().st_size < 100_000
