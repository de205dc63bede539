"""Fixtures of the deployment tests: the pinned validators (`make tools`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT


@pytest.fixture(scope="session")
def tools_bin() -> Path:
    path = Path(os.environ.get("TOOLS_BIN", PROJECT_ROOT / ".tools" / "bin"))
    missing = [
        name
        for name in ("kubectl", "kubernetes-validate", "checkov", "hadolint", "yamllint")
        if not (path / name).exists()
    ]
    if missing:
        message = f"validators missing from {path}: {', '.join(missing)}; run `make tools`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
