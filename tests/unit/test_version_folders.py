"""The version-folder rule (serving/versions.py) and its CLI verb."""

from __future__ import annotations

import subprocess
import sys

import pytest

from serving.versions import MAX_VERSION, latest_version, list_versions, version_number
from tests.helpers import PROJECT_ROOT


@pytest.mark.parametrize(
    ("name", "number"),
    [
        ("1", 1),
        ("0", 0),
        ("007", 7),
        ("+3", 3),
        (str(MAX_VERSION), MAX_VERSION),
        (str(MAX_VERSION + 1), None),
        ("-1", None),
        ("", None),
        ("+", None),
        ("1a", None),
        ("1.0", None),
        (" 1", None),
        (".tmp-1", None),
        ("٣", None),  # an Arabic-Indic digit: int() takes it, TF Serving's SimpleAtoi does not
    ],
)
def test_version_number_follows_tf_servings_int64_rule(name, number):
    assert version_number(name) == number


def test_list_versions_keeps_only_version_folders(tmp_path):
    for name in ("2", "10", "1", "+5", "005", "-3", "latest", ".tmp-99"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a folder")
    assert list_versions(tmp_path) == [1, 2, 5, 10]
    assert latest_version(tmp_path) == 10


def test_absent_or_empty_base_path_has_no_versions(tmp_path):
    assert list_versions(tmp_path / "absent") == []
    assert latest_version(tmp_path) is None


def run_versions(*args: str) -> subprocess.CompletedProcess:
    # Plain python: the verb must work before the virtual environment exists.
    return subprocess.run(
        [sys.executable, "-m", "serving", "versions", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_versions_verb_lists_and_picks_the_latest(tmp_path):
    for name in ("3", "12", "not-a-version"):
        (tmp_path / name).mkdir()
    listed = run_versions(str(tmp_path))
    assert (listed.returncode, listed.stdout) == (0, "3\n12\n")
    latest = run_versions(str(tmp_path), "--latest")
    assert (latest.returncode, latest.stdout) == (0, "12\n")


def test_versions_verb_fails_with_a_reason_when_there_is_none(tmp_path):
    result = run_versions(str(tmp_path / "absent"), "--latest")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "no version folder under" in result.stderr
