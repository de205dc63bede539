"""Fixtures of the deployment tests: the pinned validators (`make tools`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.deploy.manifests import OVERLAYS
from tests.helpers import PROJECT_ROOT, run_tool, skip_or_fail


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
        skip_or_fail(message)
    return path


@pytest.fixture(scope="session")
def rendered(tools_bin, tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """overlay -> (rendered YAML file, its documents)."""
    folder = tmp_path_factory.mktemp("rendered")
    result = {}
    for overlay in OVERLAYS:
        output = run_tool(tools_bin, "kubectl", "kustomize", f"k8s/{overlay}")
        assert output.returncode == 0, f"k8s/{overlay} does not render:\n{output.stderr}"
        path = folder / f"{overlay.replace('/', '-')}.yaml"
        path.write_text(output.stdout)
        result[overlay] = (path, [doc for doc in yaml.safe_load_all(output.stdout) if doc])
    return result
