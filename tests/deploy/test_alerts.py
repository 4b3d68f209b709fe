"""The alerting rules (deploy/prometheus/alerts.yml): Prometheus' own promtool accepts them and runs their
unit cases (tests/deploy/alerts_test.yml: each alert fires on the series that should fire it, after its
`for`, and not on healthy ones), and they read only metrics the control plane exports (checked with the
dashboards, against a running app, in test_dashboards.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.deploy.manifests import alert_rules, metric_names
from tests.support.tools import promtool

HERE = Path(__file__).parent


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False, cwd=HERE
    )


def test_promtool_accepts_the_rules() -> None:
    checked = _promtool("check", "rules", str(HERE.parent.parent / "deploy/prometheus/alerts.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_alerts_fire_when_they_should_and_not_otherwise() -> None:
    tested = _promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_case_or_says_why_not() -> None:
    cases = yaml.safe_load((HERE / "alerts_test.yml").read_text())["tests"]
    tried = {t["alertname"] for case in cases for t in case["alert_rule_test"]}
    untried = {rule["alert"] for rule in alert_rules()} - tried
    # Single-gauge thresholds, as the ones tried: their expressions are checked against the app's metrics.
    assert untried <= {
        "ReconcileLeaderMissing",
        "ReconcileDrift",
        "PinnedVersionsOverBudget",
        "MemoryNotReturned",
    }


def test_rules_group_triton_instances_by_our_label_not_the_scrape_target() -> None:
    for rule in alert_rules():
        assert metric_names(rule["expr"]), rule["alert"]
        assert "by (instance)" not in rule["expr"], (
            f"{rule['alert']}: `instance` is Prometheus' scrape target"
        )
