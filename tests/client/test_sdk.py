"""The SDK against the real stack: a whole deployment, streamed upload with progress, errors as exceptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from control_plane.client import (
    Conflict,
    ControlPlane,
    Forbidden,
    LoadFailed,
    NotFound,
    Unauthorized,
)
from control_plane.paging import DEFAULT_LIMIT
from tests.support import model_files
from tests.support.api import Api
from tests.support.builders import unique_name
from tests.support.triton_models import MODEL

PYTHON_SPEC = {
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
    "max_batch_size": 0,
}


def test_deploy_promote_predict_and_roll_back(stack: Api, base_url: str, tmp_path: Path) -> None:
    admin = ControlPlane(base_url, stack.admin_token)
    tenant = admin.tenants.create(unique_name("sdk")).name
    publisher = ControlPlane(base_url, admin.keys.create(tenant, role="publisher").key)
    consumer = ControlPlane(base_url, admin.keys.create(tenant, role="consumer").key)
    publisher.models.create(tenant, name="mlp", format="onnx")
    seen: list[tuple[int, int]] = []
    artifact = model_files.onnx_mlp(tmp_path / "mlp.onnx")

    first = publisher.versions.upload(tenant, "mlp", artifact, progress=lambda s, t: seen.append((s, t)))
    ready = publisher.versions.wait_ready(tenant, "mlp", first.version, timeout=120)
    second = publisher.versions.upload(tenant, "mlp", model_files.onnx_mlp(tmp_path / "b.onnx", seed=1))
    publisher.versions.wait_ready(tenant, "mlp", second.version, timeout=120)
    admin.aliases.promote(tenant, "mlp", 1)
    moved = admin.aliases.promote(tenant, "mlp", 2, reason="better")

    size = artifact.stat().st_size
    assert seen[0] == (0, size) and seen[-1] == (size, size)
    assert ready.state == "ready" and ready.size_bytes == size and ready.config
    assert (moved.version, moved.previous_version) == (2, 1)
    x = [[1.0, 2.0, 3.0, 4.0]]
    prediction = consumer.predict("mlp", {"x": x})
    assert prediction.version == 2 and np.asarray(prediction.outputs["y"]).shape == (1, 3)
    by_admin = admin.inference.infer("mlp", {"x": np.asarray(x, dtype=np.float32)}, tenant=tenant, version=1)
    assert by_admin["y"].dtype == np.float32 and by_admin["y"].shape == (1, 3)
    back = admin.aliases.rollback(tenant, "mlp")
    assert (back.version, back.previous_version) == (1, 2)
    assert [h.to_version for h in admin.aliases.history(tenant, "mlp")] == [1, 2, 1]
    assert consumer.predict("mlp", {"x": x}).version == 1
    actions = [e.action for e in admin.audit.list(tenant=tenant)]
    assert actions[:2] == ["alias.rollback", "alias.promote"]


def test_api_errors_are_typed_exceptions(stack: Api, base_url: str) -> None:
    admin = ControlPlane(base_url, stack.admin_token)
    tenant = admin.tenants.create(unique_name("sdk")).name
    consumer = ControlPlane(base_url, admin.keys.create(tenant, role="consumer").key)

    with pytest.raises(Unauthorized) as refused:
        ControlPlane(base_url, "not-a-key").tenants.list()
    with pytest.raises(NotFound) as missing:
        admin.models.get(tenant, "nothing")
    with pytest.raises(Conflict):
        admin.tenants.create(tenant)
    with pytest.raises(Forbidden):
        consumer.models.create(tenant, name="m", format="onnx")

    assert refused.value.status_code == 401 and refused.value.kind == "Unauthorized"
    assert "nothing" in missing.value.detail


def test_wait_ready_raises_with_tritons_message(stack: Api, base_url: str, tmp_path: Path) -> None:
    admin = ControlPlane(base_url, stack.admin_token)
    tenant = admin.tenants.create(unique_name("sdk")).name
    admin.models.create(tenant, name="broken", format="python", **PYTHON_SPEC)
    bad = tmp_path / "model.py"
    bad.write_text(
        MODEL.format(init="raise RuntimeError('weights are missing: w.bin')", scale=1.0, offset=0.0)
    )
    version = admin.versions.upload(tenant, "broken", bad)

    with pytest.raises(LoadFailed) as failed:
        admin.versions.wait_ready(tenant, "broken", version.version, timeout=120)

    assert failed.value.state == "failed"
    assert "weights are missing: w.bin" in (failed.value.state_message or "")


def test_listings_longer_than_a_page_come_whole(stack: Api, base_url: str) -> None:
    admin = ControlPlane(base_url, stack.admin_token)
    tenant = admin.tenants.create(unique_name("sdk")).name
    names = sorted(f"m{i:03d}" for i in range(DEFAULT_LIMIT + 3))
    for name in names:
        admin.models.create(tenant, name=name, format="onnx")

    first = stack.client.get(f"/v1/tenants/{tenant}/models", headers=stack.headers())
    assert len(first.json()) == DEFAULT_LIMIT and f"after={names[99]}&" in first.links["next"]["url"]
    assert [m.name for m in admin.models.list(tenant)] == names
    assert (
        len(admin.audit.list(tenant=tenant, limit=DEFAULT_LIMIT + 5)) == DEFAULT_LIMIT + 4
    )  # and tenant.create


def test_a_deleted_tenant_is_gone_and_its_keys_refused(stack: Api, base_url: str) -> None:
    admin = ControlPlane(base_url, stack.admin_token)
    tenant = admin.tenants.create(unique_name("sdk")).name
    publisher = ControlPlane(base_url, admin.keys.create(tenant, role="publisher").key)
    assert [t.name for t in publisher.tenants.list()] == [tenant]

    with pytest.raises(Forbidden):
        publisher.tenants.delete(tenant)
    admin.tenants.delete(tenant)

    with pytest.raises(NotFound):
        admin.tenants.get(tenant)
    with pytest.raises(Unauthorized):
        publisher.tenants.list()
    with pytest.raises(Conflict) as reused:
        admin.tenants.create(tenant)
    assert "was deleted" in reused.value.detail
