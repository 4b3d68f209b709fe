"""A version Triton cannot load ends `failed` with Triton's message, and blocks nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support import model_files
from tests.support.api import Api, infer_direct
from tests.support.triton_models import MODEL, PYTHON_SPEC

SPEC = PYTHON_SPEC


def test_failed_load_keeps_tritons_message_and_others_still_load(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="broken", format="python", **SPEC).status_code == 201
    bad = tmp_path / "model.py"
    bad.write_text(
        MODEL.format(init="raise RuntimeError('weights are missing: w.bin')", scale=1.0, offset=0.0)
    )
    assert api.upload(tenant, "broken", bad).status_code == 201

    failed = api.wait_settled(tenant, "broken", 1)

    assert failed["state"] == "failed"
    assert "weights are missing: w.bin" in failed["state_message"]
    publisher = api.key(tenant, "publisher")
    seen = api.client.get(
        f"/v1/tenants/{tenant}/models/broken/versions/1", headers={"Authorization": f"Bearer {publisher}"}
    ).json()["state_message"]
    alias = api.client.put(
        f"/v1/tenants/{tenant}/models/broken/aliases/production", json={"version": 1}, headers=api.headers()
    )
    assert alias.status_code == 409
    assert "failed" in alias.json()["detail"]
    # Triton's reason without its traceback, the server's model repository folder or our internal name
    # (found by an adversarial run: a tenant's publisher key read all three in the version's detail).
    for told in (failed["state_message"], seen, alias.json()["detail"]):
        assert "RuntimeError: weights are missing: w.bin" in told, told
        assert "At:" not in told and "model.py(" not in told and failed["triton_name"] not in told, told
        assert api.settings.model_repository not in told, told

    assert api.create_model(tenant, name="fine", format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(tmp_path / "fine.onnx")
    assert api.upload(tenant, "fine", artifact).status_code == 201
    ready = api.wait_settled(tenant, "fine", 1)
    assert ready["state"] == "ready"
    x = np.ones((2, 4), dtype=np.float32)
    assert infer_direct(api.settings.triton_urls[0], ready["triton_name"], {"x": x})["y"].shape == (2, 3)


def test_deleting_a_version_unloads_it_and_keeps_the_audit_trail(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    assert api.upload(tenant, "m", model_files.onnx_mlp(tmp_path / "m.onnx")).status_code == 201
    detail = api.wait_settled(tenant, "m", 1)
    assert detail["state"] == "ready"
    triton = api.state.tritons[0]

    response = api.client.delete(f"/v1/tenants/{tenant}/models/m/versions/1", headers=api.headers())

    assert response.status_code == 200
    assert response.json()["state"] == "retired"
    api.state.loader.shutdown()  # wait for the background unload
    assert not triton.client.is_model_ready(detail["triton_name"])
    assert (
        api.client.get(f"/v1/tenants/{tenant}/models/m/versions/1", headers=api.headers()).status_code == 404
    )
    events = api.client.get("/v1/audit", params={"tenant": tenant}, headers=api.headers()).json()
    assert [e["action"] for e in events] == [
        "version.delete",
        "version.create",
        "model.create",
        "tenant.create",
    ]


def test_deleting_a_model_retires_its_versions_and_frees_the_name(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    assert api.upload(tenant, "m", model_files.onnx_mlp(tmp_path / "m.onnx")).status_code == 201
    detail = api.wait_settled(tenant, "m", 1)
    assert detail["state"] == "ready"

    assert api.client.delete(f"/v1/tenants/{tenant}/models/m", headers=api.headers()).status_code == 204

    api.state.loader.shutdown()  # wait for the background unload
    assert not api.state.tritons[0].health.is_model_ready(detail["triton_name"])
    assert api.client.get(f"/v1/tenants/{tenant}/models/m", headers=api.headers()).status_code == 404
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201  # the name is free again
    audit = api.client.get("/v1/audit", params={"tenant": tenant, "model": "m"}, headers=api.headers())
    events = audit.json()
    deleted = [e for e in events if e["action"] == "model.delete"]
    assert len(deleted) == 1
    assert deleted[0]["before"]["versions"] == [1]
