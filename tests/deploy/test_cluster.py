"""Against a real cluster, when one is named: the API server accepts every object of an overlay.

Opt-in, because it talks to whatever cluster a kubectl context points at: set
``K8S_TEST_CONTEXT`` to the context and ``K8S_TEST_OVERLAY`` to an overlay of ``k8s/overlays``
(``gke``, ``eks``, ``gke-repository``, ``eks-repository``). The test runs
``kubectl apply --dry-run=server``, so the API server validates every object, custom resources
and admission webhooks included, and persists nothing. Without the variables, or when the
cluster does not answer, the test is skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.deploy.manifests import OVERLAYS
from tests.helpers import K8S_NAMESPACE, run_tool

pytestmark = pytest.mark.k8s


@pytest.fixture(scope="module")
def cluster(tools_bin) -> tuple[str, str]:
    """(kubectl context, overlay) of the cluster named by the environment."""
    context, overlay = os.environ.get("K8S_TEST_CONTEXT"), os.environ.get("K8S_TEST_OVERLAY")
    if not context or overlay not in [o.removeprefix("overlays/") for o in OVERLAYS[1:]]:
        pytest.skip(
            "no cluster named: set K8S_TEST_CONTEXT and "
            "K8S_TEST_OVERLAY=gke|eks|gke-repository|eks-repository"
        )
    try:
        answer = run_tool(
            tools_bin, "kubectl", "--context", context, "version", "--request-timeout=10s"
        )
    except subprocess.TimeoutExpired:
        answer = None
    if answer is None or answer.returncode != 0:
        reason = answer.stderr.strip().splitlines()[-1:] if answer else ["timed out"]
        pytest.skip(f"the cluster of context {context} does not answer: {' '.join(reason)}")
    return context, overlay


def test_api_server_accepts_the_overlay(tools_bin, cluster):
    context, overlay = cluster
    namespace = run_tool(
        tools_bin, "kubectl", "--context", context, "get", "namespace", K8S_NAMESPACE
    )
    assert namespace.returncode == 0, (
        f"namespace {K8S_NAMESPACE} does not exist in {context}: a server-side dry run cannot "
        f"create it; run `kubectl create namespace {K8S_NAMESPACE}` ({namespace.stderr.strip()})"
    )
    result = run_tool(
        tools_bin,
        "kubectl",
        "--context",
        context,
        "apply",
        "--dry-run=server",
        "-k",
        f"k8s/overlays/{overlay}",
    )
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout
