"""The rollout's pure parts: models.config edits, the canary verdict, the folder repository."""

from __future__ import annotations

import json
import os

import pytest

from serving.loadtest import percentile
from serving.model_config import model_entry
from serving.model_config import read_model_server_config as read_config
from serving.repository import (
    MANIFEST_NAME,
    FolderRepository,
    Manifest,
    RepositoryError,
    build_manifest,
    verify_copy,
)
from serving.rollout import (
    Comparison,
    Thresholds,
    initial_config,
    labels_of,
    with_state,
    write_config,
)
from serving.s3_sync import wanted_versions


def test_with_state_sets_exactly_the_versions_and_known_labels(tmp_path):
    config = initial_config("gs://bucket/imdb", 3)
    new = with_state(config, [4, 3, 4], {"stable": 3, "canary": 4})
    model = model_entry(new)
    assert list(model.model_version_policy.specific.versions) == [3, 4]
    assert labels_of(model) == {"stable": 3, "canary": 4}
    assert model.base_path == "gs://bucket/imdb" and model.model_platform == "tensorflow"
    assert labels_of(model_entry(config)) == {"stable": 3}  # the original is untouched
    path = tmp_path / "models.config"
    write_config(path, new)
    assert read_config(path) == new
    assert [p.name for p in tmp_path.iterdir()] == ["models.config"]  # no temp file left
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_the_sync_wants_what_the_policy_and_labels_name():
    config = model_entry(with_state(initial_config("/models/imdb", 1), [1, 2], {"stable": 1}))
    assert wanted_versions(config, published=[1, 2, 3]) == {1, 2}
    latest = model_entry(initial_config("/models/imdb", 1))
    latest.model_version_policy.latest.num_versions = 2
    assert wanted_versions(latest, published=[1, 2, 3]) == {1, 2, 3}  # 2 latest + stable's 1
    latest.model_version_policy.all.SetInParent()
    assert wanted_versions(latest, published=[1, 5]) == {1, 5}


def comparison(**changes) -> Comparison:
    values = dict(
        reviews=100,
        requests=300,
        agreement=0.99,
        mean_shift=0.01,
        max_shift=0.2,
        p99_ms={"stable": 10.0, "canary": 12.0},
        errors={"stable": 0, "canary": 0},
        server_requests=(0, 200),
    )
    return Comparison(**(values | changes))


@pytest.mark.parametrize(
    ("changes", "failing"),
    [
        ({}, []),
        ({"agreement": 0.85}, ["label agreement"]),
        ({"mean_shift": 0.2}, ["mean probability shift"]),
        ({"p99_ms": {"stable": 10.0, "canary": 16.0}}, ["p99 latency"]),
        # 5 ms of slack: a fast model's p99 may double without failing on noise.
        ({"p99_ms": {"stable": 1.0, "canary": 5.9}}, []),
        ({"errors": {"stable": 0, "canary": 1}}, ["canary errors"]),
        ({"server_requests": (1, 200)}, []),  # 0.5 %: someone's bad request, within 1 %
        ({"server_requests": (3, 200)}, ["servers' metrics"]),
        ({"server_requests": None}, []),
    ],
)
def test_the_verdict_names_each_failed_check(changes, failing):
    checks = comparison(**changes).checks(Thresholds())
    assert [text.split(" ")[0:2] for text, ok in checks if not ok] == [
        name.split(" ")[0:2] for name in failing
    ]


def test_percentile_is_the_nearest_rank():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.99) == 5.0
    assert percentile(list(map(float, range(1, 101))), 0.99) == 99.0
    assert percentile([], 0.99) != percentile([], 0.99)  # NaN


def make_version(folder, size=1000):
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.data").write_bytes(os.urandom(size))
    return folder


def test_folder_publish_is_atomic_immutable_and_verifiable(tmp_path):
    source = make_version(tmp_path / "export")
    repository = FolderRepository(tmp_path / "repository")
    manifest = repository.publish(source, 7)
    assert repository.published_versions() == [7]
    assert repository.manifest(7) == manifest
    assert [p.name for p in repository.path.iterdir()] == ["7"]  # no staging left behind
    verify_copy(repository.path / "7", manifest)
    with pytest.raises(RepositoryError, match="already published"):
        repository.publish(source, 7)
    # A folder that publish did not make is not a published version, and is not overwritten.
    make_version(repository.path / "8")
    assert repository.published_versions() == [7]
    with pytest.raises(RepositoryError, match="not published"):
        repository.publish(source, 8)


def test_verify_copy_names_the_first_bad_file(tmp_path):
    folder = make_version(tmp_path / "1")
    manifest = build_manifest(folder, 1)
    data = folder / "variables" / "variables.data"
    data.write_bytes(data.read_bytes()[:-1])
    with pytest.raises(RepositoryError, match=r"variables/variables\.data has 999 bytes"):
        verify_copy(folder, manifest)
    data.write_bytes(b"x" * 1000)
    with pytest.raises(RepositoryError, match="does not match its SHA-256"):
        verify_copy(folder, manifest)
    data.unlink()
    with pytest.raises(RepositoryError, match="is missing"):
        verify_copy(folder, manifest)


@pytest.mark.parametrize("path", ["../escape", "/etc/passwd", "a//b"])
def test_a_manifest_cannot_point_outside_its_version(path):
    text = json.dumps({"version": 1, "files": [{"path": path, "size": 1, "sha256": "0"}]})
    with pytest.raises(RepositoryError, match="unsafe path"):
        Manifest.from_json(text, "s3://bucket/imdb/1/" + MANIFEST_NAME)
    with pytest.raises(RepositoryError, match="not a valid"):
        Manifest.from_json("{", "x")
