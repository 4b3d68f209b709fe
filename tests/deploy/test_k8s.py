"""The Kubernetes manifests: rendered by kustomize, valid against the Kubernetes schemas, and consistent
with the app (settings, ports, health routes) and with each other (every reference resolves)."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from minio import Minio

from control_plane.modelrepo.s3 import MARKER
from control_plane.settings import Settings
from control_plane.status.endpoints import router as status_router
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.deploy.manifests import K8S, alert_rules, kustomize

PROMETHEUS = K8S.parent / "prometheus"

# The oldest and the newest Kubernetes the manifests are checked against (HPA v2, policy/v1 PDB,
# Job TTL, startup probes: all GA long before the oldest).
K8S_VERSIONS = ("1.29.0", "1.37.0")
KUSTOMIZATIONS = {"base": K8S / "base", "gpu": K8S / "overlays" / "gpu"}
SETTINGS_ENV = {f"CP_{name.upper()}" for name in Settings.model_fields}

# kubernetes-validate has the core API only; ServiceMonitor and PrometheusRule are CRDs of the Prometheus
# Operator. The fields we use, typed as monitoring.coreos.com/v1 defines them; unknown fields are refused.


def _operator_object(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The schema of a Prometheus Operator object (monitoring.coreos.com/v1) of `kind` with `spec`."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": spec,
        },
    }


_SECRET_KEY = {
    "type": "object",
    "required": ["name", "key"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string"}, "key": {"type": "string"}, "optional": {"type": "boolean"}},
}
SERVICE_MONITOR_SCHEMA = _operator_object(
    "ServiceMonitor",
    {
        "type": "object",
        "required": ["selector", "endpoints"],
        "additionalProperties": False,
        "properties": {
            "selector": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
            },
            "endpoints": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["port"],
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
                        "authorization": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"type": {"type": "string"}, "credentials": _SECRET_KEY},
                        },
                    },
                },
            },
        },
    },
)
# The PrometheusRule's fields (monitoring.coreos.com/v1), as strict: a rule is an alert, with the fields
# Prometheus' rule files take.
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}


def _strict(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    """An object with these fields and no other."""
    return {"type": "object", "required": required, "additionalProperties": False, "properties": properties}


def _list_of(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "minItems": 1, "items": item}


_RULE = _strict(
    ["alert", "expr"],
    {
        "alert": {"type": "string"},
        "expr": {"type": "string"},
        "for": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h|d)$"},
        "labels": _STRINGS,
        "annotations": _STRINGS,
    },
)
PROMETHEUS_RULE_SCHEMA = _operator_object(
    "PrometheusRule",
    _strict(
        ["groups"],
        {
            "groups": _list_of(
                _strict(
                    ["name", "rules"],
                    {"name": {"type": "string"}, "interval": {"type": "string"}, "rules": _list_of(_RULE)},
                )
            )
        },
    ),
)
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    """(name, objects) of each kustomization, rendered once per module."""
    return request.param, kustomize(KUSTOMIZATIONS[request.param])


def by_kind(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of that kind and name."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every pod template's spec, by workload."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers and containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_every_object_is_valid_against_the_kubernetes_schemas(rendered: tuple[str, list[dict]]) -> None:
    _, objects = rendered
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "StatefulSet", "Service", "HorizontalPodAutoscaler", "Job", "Secret"} <= kinds
    assert {"ConfigMap", "ServiceMonitor", "PrometheusRule"} <= kinds
    for obj in objects:
        if obj["kind"] in CRD_SCHEMAS:
            jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_validation_catches_a_misspelt_or_mistyped_field() -> None:
    objects = kustomize(KUSTOMIZATIONS["base"])
    deployment = copy.deepcopy(by_kind(objects, "Deployment", "control-plane"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)
    service = copy.deepcopy(by_kind(objects, "Service", "control-plane"))
    service["spec"]["ports"][0]["port"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, K8S_VERSIONS[-1], strict=True)
    monitor = copy.deepcopy(by_kind(objects, "ServiceMonitor", "control-plane"))
    monitor["spec"]["endpoints"][0]["bearerTokenSecret"] = {"name": "x", "key": "y"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


def test_every_config_map_and_secret_reference_resolves(rendered: tuple[str, list[dict]]) -> None:
    _, objects = rendered
    data = {
        (o["kind"], o["metadata"]["name"]): set((o.get("data") or {}) | (o.get("stringData") or {}))
        for o in objects
        if o["kind"] in ("ConfigMap", "Secret")
    }
    for workload, spec in pod_specs(objects):
        for c in containers(spec):
            for source in c.get("envFrom", []):
                kind, ref = (
                    ("ConfigMap", source["configMapRef"])
                    if "configMapRef" in source
                    else (
                        "Secret",
                        source["secretRef"],
                    )
                )
                assert (kind, ref["name"]) in data, f"{workload}/{c['name']}: no {kind} {ref['name']}"
            for var in c.get("env", []):
                for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                    ref = var.get("valueFrom", {}).get(field)
                    if ref:
                        assert ref["key"] in data.get((kind, ref["name"]), set()), (
                            f"{workload}/{c['name']}: {var['name']} names {kind} {ref['name']}:{ref['key']}"
                        )
    for monitor in (o for o in objects if o["kind"] == "ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            creds = endpoint.get("authorization", {}).get("credentials")
            if creds:
                assert creds["key"] in data[("Secret", creds["name"])]


def test_every_cp_variable_is_a_real_setting(rendered: tuple[str, list[dict]]) -> None:
    _, objects = rendered
    seen: set[str] = set()
    for o in objects:
        if o["kind"] in ("ConfigMap", "Secret"):
            seen |= {k for k in (o.get("data") or {}) | (o.get("stringData") or {}) if k.startswith("CP_")}
    for _, spec in pod_specs(objects):
        for c in containers(spec):
            seen |= {v["name"] for v in c.get("env", []) if v["name"].startswith("CP_")}
    assert seen - SETTINGS_ENV == set(), "CP_ variables the app does not read"
    assert {"CP_DATABASE_URL", "CP_MODEL_REPOSITORY", "CP_TRITON_URLS", "CP_METRICS_TOKEN"} <= seen


def test_secrets_hold_placeholders_only(rendered: tuple[str, list[dict]]) -> None:
    _, objects = rendered
    for secret in (o for o in objects if o["kind"] == "Secret"):
        assert "data" not in secret, "base64 data would hide what is committed"
        for key, value in secret["stringData"].items():
            assert "CHANGE-ME" in value, f"Secret {secret['metadata']['name']} {key} is not a placeholder"


def test_control_plane_ports_probes_and_scaling_match_the_app(rendered: tuple[str, list[dict]]) -> None:
    _, objects = rendered
    defaults = Settings()
    config = by_kind(objects, "ConfigMap", "control-plane-config")["data"]
    http_port = int(config.get("CP_HTTP_PORT", defaults.http_port))
    grpc_port = int(config.get("CP_GRPC_PORT", defaults.grpc_port))
    assert config["CP_HTTP_HOST"] == "0.0.0.0", "the gRPC proxy binds CP_HTTP_HOST: it must not be loopback"
    deployment = by_kind(objects, "Deployment", "control-plane")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": http_port, "grpc": grpc_port}
    service = by_kind(objects, "Service", "control-plane")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": http_port, "grpc": grpc_port}
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    health_routes = {route.path for route in status_router.routes}  # type: ignore[attr-defined]
    for probe, path in (
        ("startupProbe", "/v2/health/live"),
        ("livenessProbe", "/v2/health/live"),
        ("readinessProbe", "/v2/health/ready"),
    ):
        assert container[probe]["httpGet"]["path"] == path and path in health_routes
        assert container[probe]["httpGet"]["port"] == "http"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > defaults.triton_load_timeout_s
    assert container["resources"]["requests"]["cpu"], "the HPA's utilization needs a CPU request"
    hpa = by_kind(objects, "HorizontalPodAutoscaler", "control-plane")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "control-plane",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    job = by_kind(objects, "Job", "control-plane-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["control-plane", "db", "upgrade"]
    monitor = by_kind(objects, "ServiceMonitor", "control-plane")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_every_triton_pod_is_listed_as_an_instance(rendered: tuple[str, list[dict]]) -> None:
    _, objects = rendered
    config = by_kind(objects, "ConfigMap", "control-plane-config")["data"]
    triton = by_kind(objects, "StatefulSet", "triton")
    service = by_kind(objects, "Service", "triton")
    assert (
        triton["spec"]["serviceName"] == service["metadata"]["name"]
        and service["spec"]["clusterIP"] == "None"
    )
    pods = [f"triton-{i}.{service['metadata']['name']}" for i in range(triton["spec"]["replicas"])]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    settings = Settings(
        **{k.removeprefix("CP_").lower(): v for k, v in config.items()},
        database_url="sqlite://",
    )
    assert settings.triton_urls == [f"http://{pod}:{ports['http']}" for pod in pods]
    assert settings.triton_grpc_urls == [f"{pod}:{ports['grpc']}" for pod in pods]
    assert settings.triton_names == [pod.split(".")[0] for pod in pods]


def test_triton_reads_the_repository_the_control_plane_writes(rendered: tuple[str, list[dict]]) -> None:
    name, objects = rendered
    triton = by_kind(objects, "StatefulSet", "triton")["spec"]["template"]["spec"]
    server = next(c for c in triton["containers"] if c["name"] == "triton")
    assert server["image"].startswith("nvcr.io/nvidia/tritonserver:") and server["image"].endswith("-py3")
    env = {v["name"]: v for v in server["env"]}
    args = server["args"]
    assert "--model-control-mode=explicit" in args and "--strict-readiness=false" in args
    repository = next(a for a in args if a.startswith("--model-repository="))
    variable = re.fullmatch(r"--model-repository=\$\((\w+)\)", repository)
    assert variable, repository
    ref = env[variable.group(1)]["valueFrom"]["configMapKeyRef"]
    assert (ref["name"], ref["key"]) == ("control-plane-config", "CP_MODEL_REPOSITORY")
    config = by_kind(objects, "ConfigMap", "control-plane-config")["data"]
    assert config["CP_MODEL_REPOSITORY"].startswith("s3://")
    for aws, cp in (("AWS_ACCESS_KEY_ID", "CP_S3_ACCESS_KEY"), ("AWS_SECRET_ACCESS_KEY", "CP_S3_SECRET_KEY")):
        assert env[aws]["valueFrom"]["secretKeyRef"] == {"name": "control-plane-secrets", "key": cp}
    marker = next(c for c in triton["initContainers"] if c["name"] == "repository-marker")
    assert "build_model_repository" in " ".join(marker["command"])
    gpu = server["resources"].get("limits", {}).get("nvidia.com/gpu")
    if name == "gpu":
        assert gpu == 1 and server["resources"]["requests"]["nvidia.com/gpu"] == 1
        assert config["CP_TRITON_DEVICE"] == "gpu" and config["CP_TRITON_GPUS"] == "0"
    else:
        assert gpu is None and config["CP_TRITON_DEVICE"] == "cpu"


def test_the_repository_marker_program_makes_the_prefix_triton_needs(
    s3_endpoint: str, minio_client: Minio
) -> None:
    """The Triton pods' init container, run as written against a real S3 server: bucket and marker appear."""
    triton = by_kind(kustomize(KUSTOMIZATIONS["base"]), "StatefulSet", "triton")
    marker = triton["spec"]["template"]["spec"]["initContainers"][0]
    assert marker["command"][:2] == ["python", "-c"]
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "CP_MODEL_REPOSITORY": f"s3://{s3_endpoint}/{bucket}/triton",
        "CP_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "CP_S3_SECRET_KEY": S3_SECRET_KEY,
        "CP_S3_REGION": "us-east-1",
    }
    run = subprocess.run(
        [sys.executable, *marker["command"][1:]], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    names = [o.object_name for o in minio_client.list_objects(bucket, prefix="triton/", recursive=True)]
    assert names == [f"triton/{MARKER}"]


def test_kustomizations_exist() -> None:
    for path in KUSTOMIZATIONS.values():
        assert (Path(path) / "kustomization.yaml").is_file()


def test_the_prometheus_rule_is_alerts_yml_as_generated() -> None:
    """deploy/k8s/base/prometheusrule.yaml is what prometheus_rule.py makes of alerts.yml now: an alert
    changed in one and not the other fails here (regenerate as its header says)."""
    generated = subprocess.run(
        [sys.executable, str(PROMETHEUS / "prometheus_rule.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert (K8S / "base" / "prometheusrule.yaml").read_text() == generated
    rule = yaml.safe_load(generated)
    assert rule["spec"]["groups"] == yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    assert {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]} == {
        r["alert"] for r in alert_rules()
    }


def test_the_rule_schema_refuses_a_misspelt_field(rendered: tuple[str, list[dict]]) -> None:
    _, objects = rendered
    rule = copy.deepcopy(by_kind(objects, "PrometheusRule", "control-plane"))
    rule["spec"]["groups"][0]["rules"][0]["fro"] = rule["spec"]["groups"][0]["rules"][0].pop("for")
    with pytest.raises(jsonschema.ValidationError, match="fro"):
        jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
