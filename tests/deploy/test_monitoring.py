"""Alerts, recording rules, the dashboard and alert routing: promtool, one source for both clouds,
TF Serving's real metric names, runbook URLs, kube-prometheus-stack's selection, Alertmanager."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import yaml

from serving import contract, monitoring_rules, tf_serving_metrics
from tests.deploy.manifests import find
from tests.helpers import PROJECT_ROOT, run_tool, skip_or_fail

MONITORING = PROJECT_ROOT / "k8s" / "monitoring"
ALERTMANAGER = MONITORING / "alertmanager"
DASHBOARD = PROJECT_ROOT / "k8s" / "base" / "dashboards" / "grafana-dashboard.json"
RUNBOOK = PROJECT_ROOT / "docs" / "operations.md"
KUBE_PROMETHEUS_STACK = PROJECT_ROOT / "k8s" / "components" / "kube-prometheus-stack"
# The labels every alert carries for Alertmanager to route on.
ROUTING_LABELS = {"service": "imdb-sentiment", "namespace": contract.K8S_NAMESPACE}


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        skip_or_fail("promtool is not installed (make test installs Debian's prometheus as root)")
    return subprocess.run(
        ["promtool", *args], cwd=MONITORING, capture_output=True, text=True, timeout=120
    )


def amtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("amtool") is None:
        skip_or_fail(
            "amtool is not installed (make test installs Debian's prometheus-alertmanager as root)"
        )
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    groups = yaml.safe_load((MONITORING / "rules.yaml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def dashboard_panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


# ---------------------------------------------------------------------------------------------
# The rule file itself


def test_promtool_checks_the_rule_file():
    result = promtool("check", "rules", "rules.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_fire_and_silence_every_alert():
    result = promtool("test", "rules", "rules.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (MONITORING / "rules.test.yaml").read_text()))
    assert tested == {rule["alert"] for rule in alerts()}


def test_both_clouds_carry_the_rule_file_unchanged():
    expected = monitoring_rules.rendered((MONITORING / "rules.yaml").read_text())
    for cloud, path in monitoring_rules.OUTPUTS.items():
        assert path.read_text() == expected[cloud], (
            f"{path} is stale: run python -m serving.monitoring_rules"
        )


# ---------------------------------------------------------------------------------------------
# Metric names: TF Serving's (serving/tf_serving_metrics.py), kube-state-metrics', or recorded


def test_every_rule_reads_only_known_metrics():
    names = recorded()
    for rule in rules():
        unknown = tf_serving_metrics.unknown_names(rule["expr"], names)
        assert not unknown, f"{rule.get('record') or rule['alert']} reads {sorted(unknown)}"


def scraped_names(expression: str) -> set[str]:
    """The scraped metric names an expression reads, through the recording rules it uses."""
    expressions = {rule["record"]: rule["expr"] for rule in rules() if "record" in rule}
    names = set()
    for name in tf_serving_metrics.metric_names(expression):
        names |= scraped_names(expressions[name]) if name in expressions else {name}
    return names


def test_every_dashboard_query_reads_only_known_metrics():
    for query in dashboard_queries():
        scraped = scraped_names(query)
        assert scraped, query
        unknown = {n for n in scraped if tf_serving_metrics.unknown_names(n)}
        assert not unknown, f"{query} reads {sorted(unknown)}"


def test_the_name_check_rejects_the_local_only_gauge():
    # What the rules and the dashboard read before: a metric only the local server wrote.
    old_rule = "sum(:tensorflow:serving:batching:queued_tasks)"
    assert tf_serving_metrics.unknown_names(old_rule, recorded()) == {
        ":tensorflow:serving:batching:queued_tasks"
    }
    assert tf_serving_metrics.unknown_names("imdb:batch_queued_tasks", recorded()) == {
        "imdb:batch_queued_tasks"
    }


def test_the_dashboard_queries_the_recording_rules():
    names = recorded()
    for query in dashboard_queries():
        used = tf_serving_metrics.metric_names(query)
        assert used and used <= names, query


def test_panels_on_metrics_the_local_server_lacks_say_so():
    for panel in dashboard_panels():
        raw = {name for target in panel["targets"] for name in scraped_names(target["expr"])}
        tf_only = {
            n
            for n in raw
            if n in tf_serving_metrics.SERIES and not tf_serving_metrics.SERIES[n].local_server
        }
        if tf_only:
            assert "TF Serving only" in panel["title"], panel["title"]
            assert "local TF-Serving-compatible server does not emit" in panel["description"]


# ---------------------------------------------------------------------------------------------
# Runbooks and routing labels


def test_every_alert_has_a_severity_a_summary_and_a_runbook_url():
    text = RUNBOOK.read_text()
    sections = {
        re.sub(r"[^a-z0-9]", "", heading.lower())
        for heading in re.findall(r"^### (.+)$", text, re.MULTILINE)
    }
    base = monitoring_rules.RUNBOOK_BASE_URL
    # The base points at the runbook document of this repository.
    assert base.endswith("/" + monitoring_rules.RUNBOOK_DOC)
    assert (PROJECT_ROOT / monitoring_rules.RUNBOOK_DOC) == RUNBOOK
    for rule in alerts():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(base + "#"), f"{rule['alert']}: {url}"
        anchor = url.removeprefix(base + "#")
        assert anchor == rule["alert"].lower() and anchor in sections, rule["alert"]


def test_the_rule_files_carry_the_runbook_base_url():
    for path in (monitoring_rules.RULES, monitoring_rules.RULES_TEST):
        text = path.read_text()
        assert monitoring_rules.with_runbook_urls(text) == text, (
            f"{path.name} is stale: run python -m serving.monitoring_rules"
        )
    expected = {
        (alertname, annotations["runbook_url"])
        for test in yaml.safe_load(monitoring_rules.RULES_TEST.read_text())["tests"]
        for case in test["alert_rule_test"]
        for alertname, annotations in [
            (case["alertname"], alert["exp_annotations"]) for alert in case["exp_alerts"]
        ]
    }
    assert expected == {
        (rule["alert"], rule["annotations"]["runbook_url"])
        for rule in alerts()
        if rule["alert"] in {name for name, _ in expected}
    }


def test_every_alert_carries_the_routing_labels():
    for rule in alerts():
        assert rule["labels"].items() >= ROUTING_LABELS.items(), rule["alert"]


# ---------------------------------------------------------------------------------------------
# kube-prometheus-stack: the release label on the PodMonitor and the PrometheusRule


def test_the_kube_prometheus_stack_component_labels_the_monitor_and_the_rules(tools_bin, tmp_path):
    overlay = tmp_path / "eks-kube-prometheus-stack"
    overlay.mkdir()
    relative = os.path.relpath(PROJECT_ROOT / "k8s", overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative}/overlays/eks\n"
        f"components:\n  - {relative}/components/kube-prometheus-stack\n"
    )
    output = run_tool(tools_bin, "kubectl", "kustomize", str(overlay))
    assert output.returncode == 0, output.stderr
    docs = [doc for doc in yaml.safe_load_all(output.stdout) if doc]
    component = yaml.safe_load((KUBE_PROMETHEUS_STACK / "kustomization.yaml").read_text())
    (release,) = {
        yaml.safe_load(patch["patch"])["metadata"]["labels"]["release"]
        for patch in component["patches"]
    }
    assert release == "kube-prometheus-stack"  # the name the chart's docs install it as
    for kind in ("PodMonitor", "PrometheusRule"):
        labels = find(docs, kind)["metadata"]["labels"]
        assert labels["release"] == release, kind
        assert labels["app.kubernetes.io/name"] == "imdb-sentiment", kind
    # Nothing else is touched.
    others = [d for d in docs if d["kind"] not in ("PodMonitor", "PrometheusRule")]
    assert others and all("release" not in d["metadata"].get("labels", {}) for d in others)


# ---------------------------------------------------------------------------------------------
# Alertmanager routing examples, one per cloud


def routes_to(config_file, labels: dict[str, str]) -> str:
    result = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={config_file}",
        *(f"{key}={value}" for key, value in labels.items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip()


def expected_receiver(rule: dict) -> str:
    return f"imdb-{rule['labels']['severity']}"


def test_the_gke_alertmanager_config_is_valid_and_routes_every_alert():
    config = ALERTMANAGER / "gke-alertmanager.yaml"
    checked = amtool("check-config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for rule in alerts():
        assert routes_to(config, rule["labels"]) == expected_receiver(rule), rule["alert"]
    assert routes_to(config, {"service": "other", "severity": "page"}) == "default"


def as_alertmanager_route(route: dict, namespace: str | None = None) -> dict:
    """An AlertmanagerConfig route as Alertmanager's configuration spells it; ``namespace`` adds
    the matcher the Prometheus Operator adds to a config's top route (strategy OnNamespace)."""
    names = {
        "groupBy": "group_by",
        "groupWait": "group_wait",
        "groupInterval": "group_interval",
        "repeatInterval": "repeat_interval",
    }
    converted = {names[key]: value for key, value in route.items() if key in names}
    converted["receiver"] = route["receiver"]
    matchers = [f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"' for m in route["matchers"]]
    if namespace is not None:
        matchers.append(f'namespace="{namespace}"')
    converted["matchers"] = matchers
    if "routes" in route:
        converted["routes"] = [as_alertmanager_route(child) for child in route["routes"]]
    return converted


def test_the_eks_alertmanagerconfig_is_well_formed_and_routes_every_alert(tmp_path):
    config = yaml.safe_load((ALERTMANAGER / "eks-alertmanagerconfig.yaml").read_text())
    assert config["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert config["kind"] == "AlertmanagerConfig"
    namespace = config["metadata"]["namespace"]
    assert namespace == contract.K8S_NAMESPACE
    spec = config["spec"]
    assert set(spec) == {"route", "receivers"}
    receivers = {receiver["name"]: receiver for receiver in spec["receivers"]}
    assert len(receivers) == len(spec["receivers"])

    def check(route: dict) -> None:
        assert set(route) <= {
            "receiver",
            "matchers",
            "groupBy",
            "groupWait",
            "groupInterval",
            "repeatInterval",
            "continue",
            "routes",
        }, route
        assert route["receiver"] in receivers, route["receiver"]
        for matcher in route["matchers"]:
            assert set(matcher) == {"name", "matchType", "value"}, matcher
            assert matcher["matchType"] in ("=", "!=", "=~", "!~"), matcher
        for child in route.get("routes", []):
            check(child)

    check(spec["route"])
    for receiver in receivers.values():
        for webhook in receiver["webhookConfigs"]:
            assert set(webhook["urlSecret"]) == {"name", "key"}, receiver["name"]
    # The same route as the operator hands it to Alertmanager, with webhooks that amtool checks.
    alertmanager = tmp_path / "alertmanager.yaml"
    alertmanager.write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "default",
                    "routes": [as_alertmanager_route(spec["route"], namespace)],
                },
                "receivers": [{"name": "default"}]
                + [
                    {"name": name, "webhook_configs": [{"url": "https://alerts.example.com/"}]}
                    for name in receivers
                ],
            }
        )
    )
    checked = amtool("check-config", str(alertmanager))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for rule in alerts():
        assert routes_to(alertmanager, rule["labels"]) == expected_receiver(rule), rule["alert"]
    # An alert without the namespace label never reaches the route: why every alert carries it.
    no_namespace = {"service": "imdb-sentiment", "severity": "page"}
    assert routes_to(alertmanager, no_namespace) == "default"
