"""The Grafana dashboard: every query parses as PromQL, and every metric it reads is one that the real
control plane exports (scraped from a running app after one inference) or that the real bundled Triton
exports at its metrics port; Triton's GPU-only metrics, which a CPU-only Triton does not export, are
checked against the list below."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.deploy.manifests import (
    alert_rules,
    dashboard_queries,
    exported_names,
    load_dashboards,
    metric_names,
)
from tests.fixtures_triton import RunningTriton
from tests.support.api import ADMIN_TOKEN, Api
from tests.support.deploy import deploy_onnx

# Exported by Triton only where it sees GPUs (its metrics docs: "GPU Metrics"); this machine has none.
TRITON_GPU_ONLY = {
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
    "nv_energy_consumption",
}


def all_queries() -> list[tuple[str, str, str]]:
    """(dashboard file, where, expression) for every query of every dashboard."""
    return [
        (name, where, expr) for name, d in load_dashboards().items() for where, expr in dashboard_queries(d)
    ]


def test_there_are_dashboards_with_the_panels_operators_need() -> None:
    dashboards = load_dashboards()
    assert "control-plane.json" in dashboards
    names = set().union(*(metric_names(expr) for _, _, expr in all_queries()))
    expected = {
        "cp_inference_requests_total",
        "cp_inference_request_seconds_bucket",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
    }
    assert expected <= names
    exprs = [expr for _, _, expr in all_queries()]
    assert any("histogram_quantile" in e and "tenant" in e and "model" in e for e in exprs)


@pytest.mark.parametrize(("dashboard", "where", "expr"), all_queries(), ids=lambda v: str(v)[:60])
def test_every_query_parses(dashboard: str, where: str, expr: str) -> None:
    assert metric_names(expr), f"{dashboard} {where}: selects no metric"


def test_the_checker_refuses_invalid_queries() -> None:
    with pytest.raises(ValueError, match=r".+"):
        metric_names("sum by (tenant (rate(cp_inference_requests_total[5m]))")
    with pytest.raises(AssertionError, match="unknown Grafana variable"):
        metric_names('rate(cp_inference_requests_total{tenant=~"$tenants"}[5m])')
    assert metric_names('rate(x_total{tenant=~"$tenant"}[$__rate_interval]) / on() group_left y') == {
        "x_total",
        "y",
    }


def test_every_metric_is_exported_by_the_app_or_triton(
    api: Api, tmp_path: Path, triton: RunningTriton
) -> None:
    deployed = deploy_onnx(api, tmp_path)
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 4], "data": np.ones(4, np.float32).tolist()}
        ]
    }
    answer = api.client.post(
        f"/v2/models/{deployed.model}/infer", json=body, headers=api.headers(deployed.consumer_key)
    )
    assert answer.status_code == 200, answer.text
    scraped = api.client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert scraped.status_code == 200
    app_names = exported_names(scraped.text)
    counted = [
        line
        for line in scraped.text.splitlines()
        if line.startswith("cp_inference_requests_total{") and f'tenant="{deployed.tenant}"' in line
    ]
    assert len(counted) == 1 and counted[0].endswith(" 1.0"), counted  # the inference above
    triton_text = httpx.get(f"http://127.0.0.1:{triton.process.metrics_port}/metrics", timeout=10).text
    triton_names = exported_names(triton_text)
    assert "nv_inference_request_success" in triton_names
    assert not TRITON_GPU_ONLY & triton_names, "this Triton has GPUs: check them against its own output"
    alerts = [("alerts.yml", rule["alert"], rule["expr"]) for rule in alert_rules()]
    missing = {
        f"{dashboard} {where}: {name}"
        for dashboard, where, expr in [*all_queries(), *alerts]
        for name in metric_names(expr)
        if name not in app_names | triton_names | TRITON_GPU_ONLY
    }
    assert not missing, "metrics nobody exports:\n" + "\n".join(sorted(missing))


def test_control_plane_panels_group_tritons_by_our_label_not_the_scrape_target() -> None:
    """Prometheus sets `instance` to the scrape target (a control-plane replica); a Triton is `triton`."""
    for dashboard, where, expr in all_queries():
        if any(name.startswith("cp_") for name in metric_names(expr)):
            assert not re.search(r"\binstance\b", expr), f"{dashboard} {where}: {expr}"
