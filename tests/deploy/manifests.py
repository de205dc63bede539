"""What the deployment tests share: the overlays, finding objects in rendered manifests, the
image's CMD, and running scripts/deploy.sh. (The ``rendered`` fixture is in conftest.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess

from tests.helpers import PROJECT_ROOT

# The model baked into the image; and model repository mode (versions from a bucket).
IMAGE_OVERLAYS = ("base", "overlays/gke", "overlays/eks")
REPOSITORY_OVERLAYS = ("overlays/gke-repository", "overlays/eks-repository")
OVERLAYS = IMAGE_OVERLAYS + REPOSITORY_OVERLAYS


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    matches = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def container_of(docs: list[dict]) -> dict:
    (container,) = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def dockerfile_env(name: str) -> str:
    """The value docker/Dockerfile's ENV gives ``name``."""
    text = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    match = re.search(rf"^(?:ENV |\s+){name}=(\S+)", text, re.MULTILINE)
    assert match, f"docker/Dockerfile sets no ENV {name}"
    return match.group(1)


def dockerfile_cmd() -> list[str]:
    text = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    match = re.search(r"^CMD (\[.*?\])$", text.replace("\\\n", ""), re.MULTILINE)
    assert match, "docker/Dockerfile has no exec-form CMD"
    return json.loads(match.group(1))


def run_deploy(tools_bin, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "scripts/deploy.sh", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ
        | {"KUBECTL": str(tools_bin / "kubectl"), "DEPLOY_RECORD_DIR": str(tmp_path)},
    )
