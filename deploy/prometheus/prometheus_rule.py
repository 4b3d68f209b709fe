"""Print deploy/prometheus/alerts.yml as the Prometheus Operator's PrometheusRule of deploy/k8s/base.

    python deploy/prometheus/prometheus_rule.py > deploy/k8s/base/prometheusrule.yaml

alerts.yml is the one source: Prometheus loads it as it is (compose), the operator wants the same groups
inside a PrometheusRule. tests/deploy/test_k8s.py fails when the committed file differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ALERTS = Path(__file__).with_name("alerts.yml")
HEADER = """\
# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/prometheus_rule.py: edit alerts.yml, then
#   python deploy/prometheus/prometheus_rule.py > deploy/k8s/base/prometheusrule.yaml
# The Prometheus Operator loads these rules where its ruleSelector matches the labels below.
"""


def prometheus_rule(alerts: str) -> str:
    """The PrometheusRule holding the groups of an alerting-rules file."""
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "control-plane", "labels": {"app.kubernetes.io/name": "control-plane"}},
        "spec": {"groups": yaml.safe_load(alerts)["groups"]},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=110, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(prometheus_rule(ALERTS.read_text()))
