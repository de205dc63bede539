"""The serving benchmark's batching variants: the "no timeout" row runs the shipped config with
exactly ``batch_timeout_micros`` changed, whatever the shipped file's layout (no server: the
measurement is replaced by a stub that records the config each run was given)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from serving import bench_serve
from serving.model_server.config_protos import BatchingParameters

# A batching config laid out unlike the shipped one, with another timeout.
SHIPPED = """\
max_batch_size { value: 64 }
batch_timeout_micros {
  value: 5000
}
max_enqueued_batches { value: 4 }
"""


def parse(text: str):
    return text_format.Parse(text, BatchingParameters())


@pytest.fixture
def measured(monkeypatch, tmp_path) -> dict[str, str | None]:
    """Replaces the server runs: row name -> the batching parameters it was given (text)."""
    configs: dict[str, str | None] = {}

    def measure(model_dir, batching, name, plan, reviews, out):
        configs[name] = batching.read_text() if batching else None
        step = {"reviews_per_second": 100.0, "latency_ms": {"p99": 5.0}, "errors": {}}
        steps = [step | {"reviews_per_request": size} for size in (1, 32)]
        return {"steps": steps, "max_sustainable": [{"requests_per_second": 80.0}]}

    monkeypatch.setattr(bench_serve, "measure", measure)
    return configs


def use_shipped(monkeypatch, tmp_path: Path, text: str) -> None:
    shipped = tmp_path / "batching.config"
    shipped.write_text(text)
    monkeypatch.setattr(bench_serve, "BATCHING_CONFIG", shipped)


def test_the_no_timeout_row_changes_only_the_timeout_of_the_shipped_config(
    measured, monkeypatch, tmp_path
):
    use_shipped(monkeypatch, tmp_path, SHIPPED)
    document = bench_serve.run_bench_serve(tmp_path / "model", tmp_path / "out", seconds=0.1)
    closed = {name: text for name, text in measured.items() if not name.endswith("-open")}
    off, shipped, no_timeout = (closed[f"config-{index}"] for index in range(3))
    assert off is None
    assert parse(shipped) == parse(SHIPPED)
    expected = parse(SHIPPED)
    expected.batch_timeout_micros.value = 0
    assert parse(no_timeout) == expected
    assert parse(no_timeout).HasField("batch_timeout_micros")
    labels = [row["batching"] for row in document["rows"]]
    assert labels[1] == "on, k8s/base/config/batching.config (5 ms timeout)"
    assert labels[2] == "on, the same with batch_timeout_micros 0"


def test_a_shipped_config_without_a_timeout_has_no_no_timeout_row(measured, monkeypatch, tmp_path):
    use_shipped(monkeypatch, tmp_path, "max_batch_size { value: 64 }\n")
    document = bench_serve.run_bench_serve(tmp_path / "model", tmp_path / "out", seconds=0.1)
    assert [row["batching"] for row in document["rows"]] == [
        "off",
        "on, k8s/base/config/batching.config (no timeout)",
    ]


def test_an_unreadable_shipped_config_fails_before_any_run(measured, monkeypatch, tmp_path):
    use_shipped(monkeypatch, tmp_path, "max_batch_size { value: 64 }\nbatch_timeout_micro: 1\n")
    with pytest.raises(ValueError, match=r"batching\.config: .*batch_timeout_micro"):
        bench_serve.run_bench_serve(tmp_path / "model", tmp_path / "out", seconds=0.1)
    assert measured == {}


def test_the_variant_of_the_real_shipped_config_differs_only_in_the_timeout(tmp_path):
    shipped = parse(bench_serve.BATCHING_CONFIG.read_text())
    assert shipped.batch_timeout_micros.value > 0  # else there is no variant to measure
    variant = parse(bench_serve.without_batch_timeout(shipped))
    shipped.batch_timeout_micros.value = 0
    assert variant == shipped
