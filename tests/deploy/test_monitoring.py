"""Alerts, recording rules and the dashboard: promtool, one source for both clouds, runbooks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import yaml

from serving import monitoring_rules
from tests.helpers import PROJECT_ROOT, skip_or_fail

MONITORING = PROJECT_ROOT / "k8s" / "monitoring"
DASHBOARD = PROJECT_ROOT / "k8s" / "base" / "dashboards" / "grafana-dashboard.json"
RUNBOOK = PROJECT_ROOT / "docs" / "operations.md"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        skip_or_fail("promtool is not installed (make test installs Debian's prometheus as root)")
    return subprocess.run(
        ["promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict]:
    groups = yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rule_file():
    result = promtool("check", "rules", "rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fire_and_silence_every_alert():
    result = promtool("test", "rules", "rules.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "rules.test.yaml").read_text()))
    assert tested == {rule["alert"] for rule in rules() if "alert" in rule}


def test_both_clouds_carry_the_rule_file_unchanged():
    expected = monitoring_rules.rendered((MONITORING / "rules.yaml").read_text())
    for cloud, path in monitoring_rules.OUTPUTS.items():
        assert path.read_text() == expected[cloud], (
            f"{path} is stale: run python -m serving.monitoring_rules"
        )


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section():
    sections = {
        re.sub(r"[^a-z0-9]", "", heading.lower())
        for heading in re.findall(r"^### (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    }
    for rule in rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{anchor}"
        assert anchor == rule["alert"].lower() and anchor in sections, rule["alert"]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_the_dashboard_queries_the_recording_rules():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for query in dashboard_queries():
        names = set(re.findall(r"imdb:[a-z0-9_:]+", query))
        assert names and names <= recorded, query
