"""Batching and instances per model: always shown, changed with PATCH for new versions (checked through
Triton's protobuf first, audited), and an existing version re-deployed with them by an admin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control_plane.modelconfig.config import parse_config
from tests.support import model_files
from tests.support.api import Api
from tests.support.signature_models import onnx_fixed


def _model(api: Api, tenant: str, name: str) -> dict[str, Any]:
    response = api.client.get(f"/v1/tenants/{tenant}/models/{name}", headers=api.headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


def _patch(api: Api, tenant: str, name: str, body: dict[str, Any], key: str | None = None) -> Any:
    return api.client.patch(f"/v1/tenants/{tenant}/models/{name}", json=body, headers=api.headers(key))


def _audit(api: Api, tenant: str, action: str) -> list[dict[str, Any]]:
    response = api.client.get("/v1/audit", params={"tenant": tenant, "action": action}, headers=api.headers())
    assert response.status_code == 200, response.text
    return list(response.json())


def _ready(api: Api, tenant: str, name: str, artifact: Path) -> dict[str, Any]:
    uploaded = api.upload(tenant, name, artifact)
    assert uploaded.status_code == 201, uploaded.text
    detail = api.wait_settled(tenant, name, uploaded.json()["version"])
    assert detail["state"] == "ready", detail
    return detail


def test_effective_settings_are_always_shown(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    created = api.create_model(tenant, name="m", format="onnx")
    assert created.status_code == 201
    assert created.json()["serving"] == {
        "max_batch_size": 8,
        "dynamic_batching": {
            "enabled": True,
            "max_queue_delay_microseconds": 100,
            "preferred_batch_size": [],
            "preserve_ordering": False,
        },
        "instance_group": {"count": 1, "kind": "cpu", "gpus": []},
    }
    assert created.json()["max_batch_size_auto"] is True
    version = _ready(api, tenant, "m", onnx_fixed(tmp_path / "fixed.onnx"))  # fixed first dim: no batching
    assert version["serving"]["max_batch_size"] == 0
    assert version["serving"]["dynamic_batching"]["enabled"] is False
    assert _model(api, tenant, "m")["serving"]["max_batch_size"] == 0  # chosen from the latest signature


def test_patch_applies_to_new_versions_and_is_audited(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    publisher = api.key(tenant, "publisher")
    assert api.create_model(tenant, key=publisher, name="m", format="onnx").status_code == 201
    v1 = _ready(api, tenant, "m", model_files.onnx_mlp(tmp_path / "v1.onnx"))
    change = {
        "max_batch_size": 4,
        "dynamic_batching": {"max_queue_delay_microseconds": 500, "preferred_batch_size": [2, 4]},
        "instance_group": {"count": 2},
    }

    patched = _patch(api, tenant, "m", change, key=publisher)

    assert patched.status_code == 200, patched.text
    serving = patched.json()["serving"]
    assert serving["max_batch_size"] == 4 and patched.json()["max_batch_size_auto"] is False
    assert serving["dynamic_batching"]["max_queue_delay_microseconds"] == 500
    assert serving["instance_group"]["count"] == 2
    v2 = _ready(api, tenant, "m", model_files.onnx_mlp(tmp_path / "v2.onnx", seed=3))
    config = parse_config(v2["config"])
    assert config.max_batch_size == 4
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4]
    assert config.instance_group[0].count == 2
    assert v2["serving"] == serving
    assert api.version(tenant, "m", 1)["config"] == v1["config"]  # existing versions keep theirs
    (row,) = _audit(api, tenant, "model.update")
    assert row["before"] == {"max_batch_size": None, "dynamic_batching": None, "instance_group": None}
    assert row["after"]["max_batch_size"] == 4 and row["after"]["instance_group"]["count"] == 2
    back = _patch(api, tenant, "m", {"max_batch_size": None}, key=publisher)  # null: automatic again
    assert back.status_code == 200 and back.json()["max_batch_size_auto"] is True


def test_invalid_changes_are_422_and_change_nothing(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    _ready(api, tenant, "m", onnx_fixed(tmp_path / "fixed.onnx"))
    before = _model(api, tenant, "m")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"max_batch_size": 4}, "needs a dynamic first dimension (-1) on every input and output"),
        ({"dynamic_batching": {"max_queue_delay_microseconds": 100}}, "the model does not batch"),
        ({"instance_group": {"count": 0}}, "instance_group.count"),
        ({"max_batch_size": -1}, "max_batch_size"),
        ({}, "give at least one of max_batch_size, dynamic_batching, instance_group, warmup"),
        ({"inputs": []}, "inputs"),
    ]
    for body, message in cases:
        response = _patch(api, tenant, "m", body)
        assert response.status_code == 422, (body, response.text)
        assert message in response.json()["detail"], (body, response.json())
    assert _model(api, tenant, "m") == before
    assert _audit(api, tenant, "model.update") == []


def test_preferred_sizes_over_the_limit_are_422(api: Api) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    response = _patch(api, tenant, "m", {"dynamic_batching": {"preferred_batch_size": [16]}})
    assert response.status_code == 422
    assert response.json()["detail"] == "dynamic_batching.preferred_batch_size 16 exceeds max_batch_size 8"


def test_admin_redeploys_a_version_with_the_new_settings(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    publisher = api.key(tenant, "publisher")
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    v1 = _ready(api, tenant, "m", model_files.onnx_mlp(tmp_path / "v1.onnx"))
    assert _patch(api, tenant, "m", {"max_batch_size": 2, "instance_group": {"count": 2}}).status_code == 200
    path = f"/v1/tenants/{tenant}/models/m/versions/1/redeploy"

    denied = api.client.post(path, headers=api.headers(publisher))
    redeployed = api.client.post(path, headers=api.headers())

    assert denied.status_code == 403
    assert "only admins may re-deploy" in denied.json()["detail"]
    assert redeployed.status_code == 201, redeployed.text
    v2 = api.wait_settled(tenant, "m", redeployed.json()["version"])
    assert v2["version"] == 2 and v2["state"] == "ready"
    assert (v2["sha256"], v2["signature"]) == (v1["sha256"], v1["signature"])
    assert parse_config(v2["config"]).max_batch_size == 2
    assert v2["serving"]["instance_group"]["count"] == 2
    assert api.version(tenant, "m", 1)["config"] == v1["config"]  # the old version is kept as it was
    (row,) = _audit(api, tenant, "version.redeploy")
    assert row["after"]["redeployed_from"] == 1 and row["target"] == f"{tenant}/m/v2"
