"""docker-compose.yml: accepted by `docker-compose config`, and consistent with the app and the
monitoring files (settings that exist, the repository Triton reads, the targets Prometheus scrapes)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.settings import Settings
from tests.deploy.manifests import ROOT, compose_config
from tests.support.tools import promtool

GRAFANA = ROOT / "deploy" / "grafana"

SETTINGS_ENV = {f"CP_{name.upper()}" for name in Settings.model_fields}
ENV = {"CP_ADMIN_TOKEN": "compose-check", "CP_METRICS_TOKEN": "compose-metrics"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The resolved configuration, every profile included."""
    out = compose_config("--profile", "monitoring", env=ENV)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Volume target -> source of a service (`docker-compose config` writes `source:target[:mode]`)."""
    pairs = (
        v.split(":")[:2] if isinstance(v, str) else (v["source"], v["target"]) for v in service["volumes"]
    )
    return {target: source for source, target in pairs}


def test_config_refuses_to_start_without_an_admin_key() -> None:
    out = compose_config(env={"CP_ADMIN_TOKEN": ""})
    assert out.returncode != 0 and "set CP_ADMIN_TOKEN" in out.stderr


def test_every_cp_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    env = compose["services"]["control-plane"]["environment"]
    assert set(env) - SETTINGS_ENV == set()
    assert env["CP_HTTP_HOST"] == "0.0.0.0", "the gRPC proxy binds CP_HTTP_HOST: loopback is unreachable"
    assert env["CP_METRICS_TOKEN"] == ENV["CP_METRICS_TOKEN"]


def test_triton_reads_the_repository_the_control_plane_writes(compose: dict[str, Any]) -> None:
    control_plane = compose["services"]["control-plane"]["environment"]
    triton = compose["services"]["triton"]
    command = triton["command"] if isinstance(triton["command"], str) else " ".join(triton["command"])
    args = command.split()
    assert f"--model-repository={control_plane['CP_MODEL_REPOSITORY']}" in args
    assert "--model-control-mode=explicit" in args
    assert triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert control_plane["CP_TRITON_URLS"] == "http://triton:8000"
    assert control_plane["CP_TRITON_GRPC_URLS"] == "triton:8001"
    assert triton["environment"]["AWS_ACCESS_KEY_ID"] == control_plane["CP_S3_ACCESS_KEY"]


def test_prometheus_scrapes_the_services_compose_runs(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"control-plane", "triton"}
    settings = Settings()
    assert jobs["control-plane"]["static_configs"][0]["targets"] == [f"control-plane:{settings.http_port}"]
    assert jobs["triton"]["static_configs"][0]["targets"] == ["triton:8002"]
    auth = jobs["control-plane"]["authorization"]
    assert auth["type"] == "Bearer"
    prometheus = compose["services"]["prometheus"]
    assert auth["credentials_file"] in " ".join(prometheus["command"])  # where the entrypoint writes it
    assert mounts(prometheus)["/etc/prometheus/prometheus.yml"] == str(
        ROOT / "deploy/prometheus/prometheus.yml"
    )
    assert prometheus["profiles"] == ["monitoring"] and compose["services"]["grafana"]["profiles"] == [
        "monitoring"
    ]


def test_promtool_accepts_the_prometheus_config(compose: dict[str, Any], tmp_path: Path) -> None:
    """`promtool check config`, with the token file the compose entrypoint writes put where it points."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    token = tmp_path / "metrics_token"
    token.write_text("compose-metrics")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    # The rule files as compose mounts them (promtool checks them too).
    mounted = mounts(compose["services"]["prometheus"])
    config["rule_files"] = [mounted[path] for path in config["rule_files"]]
    assert config["rule_files"] == [str(ROOT / "deploy/prometheus/alerts.yml")]
    checked_file = tmp_path / "prometheus.yml"
    checked_file.write_text(yaml.safe_dump(config))
    checked = subprocess.run(
        [promtool(), "check", "config", str(checked_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_grafana_provisioning_points_at_the_mounted_dashboards(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/control-plane.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts(grafana)[path] == str(GRAFANA / "dashboards")
    assert list((GRAFANA / "dashboards").glob("*.json"))
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
