"""Client behaviour without a model: error mapping, argument checks, waiting for AVAILABLE."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator

import pytest

from serving.client import (
    RequestError,
    RestClient,
    VersionStatus,
    make_client,
    wait_until_available,
)
from tests.helpers import PROJECT_ROOT, free_port

# path -> (HTTP status, body, seconds to wait before answering)
CANNED = {
    "/v1/models/imdb": (
        200,
        {
            "model_version_status": [
                {
                    "version": "2",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": ""},
                },
                {
                    "version": "1",
                    "state": "END",
                    "status": {"error_code": "OK", "error_message": ""},
                },
            ]
        },
        0,
    ),
    "/v1/models/nosuch": (404, {"error": "Could not find any versions of model nosuch"}, 0),
    "/v1/models/imdb:predict": (
        200,
        {"predictions": [{"probability": 0.9, "label": "positive"}]},
        0,
    ),
    "/v1/models/short:predict": (200, {"predictions": []}, 0),
    "/v1/models/odd:predict": (200, {"predictions": [{"probability": "high", "label": 1}]}, 0),
    "/v1/models/html:predict": (502, "<html>bad gateway</html>", 0),
    "/v1/models/slow": (200, {}, 2),
}


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            status, body, delay = CANNED.get(self.path, (404, "<html>nope</html>", 0))
            time.sleep(delay)
            payload = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._answer()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_status_parses_versions(stub_url):
    versions = RestClient(stub_url).status()
    assert versions == [VersionStatus(2, "AVAILABLE", "OK", ""), VersionStatus(1, "END", "OK", "")]


def test_predict_parses_rows(stub_url):
    (prediction,) = RestClient(stub_url).predict(["fine"])
    assert (prediction.label, prediction.probability) == ("positive", 0.9)


def test_server_error_body_becomes_request_error(stub_url):
    with pytest.raises(RequestError) as error:
        RestClient(stub_url, model_name="nosuch").status()
    assert error.value.code == "NOT_FOUND"
    assert error.value.message == "Could not find any versions of model nosuch"


def test_non_json_error_keeps_status_and_text(stub_url):
    with pytest.raises(RequestError) as error:
        RestClient(stub_url, model_name="html").predict(["x"])
    assert error.value.code == "UNKNOWN" and "HTTP 502" in error.value.message


def test_wrong_number_of_predictions_is_an_error(stub_url):
    with pytest.raises(RequestError, match="0 probabilities"):
        RestClient(stub_url, model_name="short").predict(["a", "b"])


def test_malformed_prediction_is_a_request_error(stub_url):
    with pytest.raises(RequestError, match="malformed prediction") as error:
        RestClient(stub_url, model_name="odd").predict(["a"])
    assert error.value.code == "INTERNAL"


def test_refused_connection_is_unavailable():
    with pytest.raises(RequestError) as error:
        RestClient(f"http://127.0.0.1:{free_port()}").status()
    assert error.value.code == "UNAVAILABLE"


def test_timeout_is_deadline_exceeded(stub_url):
    with pytest.raises(RequestError) as error:
        RestClient(stub_url, model_name="slow", timeout=0.3).status()
    assert error.value.code == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize(
    ("texts", "error"),
    [("one string", TypeError), ([], ValueError), (["ok", 3], TypeError)],
)
def test_predict_checks_its_arguments(texts, error):
    with pytest.raises(error):
        RestClient("http://127.0.0.1:1").predict(texts)


def test_make_client_needs_exactly_one_endpoint():
    with pytest.raises(ValueError):
        make_client()
    with pytest.raises(ValueError):
        make_client("http://a:1", "a:2")
    with pytest.raises(ValueError, match="http://"):
        make_client("localhost:8501")


class FakeClient:
    transport = "fake"

    def __init__(self, answers: list):
        self.answers = answers

    def status(self, version=None):
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_wait_returns_once_available():
    client = FakeClient(
        [
            RequestError("UNAVAILABLE", "connection refused"),
            [VersionStatus(1, "LOADING", "OK", "")],
            [VersionStatus(1, "AVAILABLE", "OK", "")],
        ]
    )
    assert wait_until_available(client, 5, poll_seconds=0.01)[0].state == "AVAILABLE"


def test_wait_fails_fast_when_every_version_failed():
    client = FakeClient([[VersionStatus(1, "END", "NOT_FOUND", "no saved_model.pb")]])
    started = time.monotonic()
    with pytest.raises(RequestError, match=r"no saved_model\.pb") as error:
        wait_until_available(client, 30, poll_seconds=0.01)
    assert error.value.code == "FAILED_PRECONDITION"
    assert time.monotonic() - started < 5


def test_wait_gives_up_at_the_deadline_saying_what_it_saw():
    client = FakeClient([[VersionStatus(3, "LOADING", "OK", "")]])
    with pytest.raises(RequestError, match="version 3 LOADING") as error:
        wait_until_available(client, 0.2, poll_seconds=0.05)
    assert error.value.code == "DEADLINE_EXCEEDED"


def test_importing_the_rest_client_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, serving.client, serving.smoke; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    assert result.stdout.strip() == "False"
