"""Rules for the repository's own text: the README stays a front door, and nothing points outside
the clone a user has."""

from __future__ import annotations

import re
import subprocess

from tests.helpers import PROJECT_ROOT

README_MAX_LINES = 200
# A path that leaves the repository: a sibling checkout or a machine-specific absolute path.
OUTSIDE = re.compile(r"\.\./shared\b|/work/(shared|main)\b")


def tracked_text_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    )
    return [
        name
        for name in listed.stdout.splitlines()
        if (PROJECT_ROOT / name).is_file() and not name.endswith((".lock", ".gz", ".png"))
    ]


def test_the_readme_stays_within_its_line_budget():
    lines = (PROJECT_ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_no_tracked_file_points_outside_the_repository():
    found = []
    for name in tracked_text_files():
        try:
            text = (PROJECT_ROOT / name).read_text()
        except UnicodeDecodeError:
            continue
        found += [
            f"{name}:{number}: {line.strip()}"
            for number, line in enumerate(text.splitlines(), 1)
            if OUTSIDE.search(line)
        ]
    assert not found, "\n".join(found)
