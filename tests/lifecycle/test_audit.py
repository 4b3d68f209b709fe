"""Every management action is audited once, with before/after, in the same transaction as the change."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from control_plane.auth.context import RequestContext
from control_plane.auth.dependencies import ADMIN_TOKEN_PRINCIPAL
from control_plane.db.models import AuditEvent, Tenant
from control_plane.db.session import transaction
from control_plane.tenants import service as tenants
from tests.support.api import Api
from tests.support.builders import unique_name
from tests.support.deploy import deploy_onnx


def test_each_action_appears_once_with_before_and_after(api: Api, tmp_path: Path) -> None:
    v1 = deploy_onnx(api, tmp_path)
    v2 = deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=1, alias="staging")
    alias = f"/v1/tenants/{v1.tenant}/models/{v1.model}/aliases/production"
    headers = api.headers()
    assert api.client.put(alias, json={"version": v2.version}, headers=headers).status_code == 200
    canary = {"routes": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}
    assert api.client.put(alias + "/traffic", json=canary, headers=headers).status_code == 200
    assert api.client.post(alias + "/rollback", headers=headers, json={"reason": "oops"}).status_code == 200
    keys = api.client.get(f"/v1/tenants/{v1.tenant}/keys", headers=headers).json()
    assert (
        api.client.delete(f"/v1/tenants/{v1.tenant}/keys/{keys[0]['id']}", headers=headers).status_code == 200
    )

    events = api.client.get("/v1/audit", params={"tenant": v1.tenant, "limit": 100}, headers=headers).json()
    actions = [e["action"] for e in reversed(events)]
    assert actions == [
        "tenant.create",
        "key.create", "key.create", "model.create", "version.create", "alias.promote",  # deploy v1
        "key.create", "key.create", "version.create", "alias.promote",  # deploy v2 to staging
        "alias.promote",  # production 1 -> 2
        "alias.traffic",
        "alias.rollback",
        "key.revoke",
    ]  # fmt: skip
    assert all(e["outcome"] == "success" for e in events)
    publisher = f"key:{v1.publisher_key.split('_')[1]}"
    assert {e["actor"] for e in events if e["action"] in ("model.create", "version.create")} == {
        publisher,
        f"key:{v2.publisher_key.split('_')[1]}",
    }
    assert {e["actor"] for e in events if e["action"].startswith(("alias.", "key.", "tenant."))} == {
        "admin-token"
    }
    by_action = {e["action"]: e for e in events}  # newest of each
    assert by_action["alias.rollback"]["before"] == {"version": 2}
    assert by_action["alias.rollback"]["after"] == {"version": 1}
    assert by_action["alias.traffic"]["before"]["routes"] == []
    assert by_action["alias.traffic"]["after"]["routes"] == canary["routes"]
    assert by_action["key.revoke"]["after"] == {"revoked": True}
    assert all(e["request_id"] for e in events)
    only_traffic = api.client.get(
        "/v1/audit", params={"action": "alias.traffic", "model": v1.model}, headers=headers
    )
    assert [e["target"] for e in only_traffic.json() if e["tenant"] == v1.tenant] == [
        f"{v1.tenant}/{v1.model}@production"
    ]


def test_audit_filters_by_time(api: Api) -> None:
    tenant = api.tenant()
    event = api.client.get("/v1/audit", params={"tenant": tenant}, headers=api.headers()).json()[0]
    at = event["created_at"]
    assert api.client.get("/v1/audit", params={"tenant": tenant, "since": at}, headers=api.headers()).json()
    assert (
        api.client.get("/v1/audit", params={"tenant": tenant, "until": at}, headers=api.headers()).json()
        == []
    )


def test_audit_is_admin_only(api: Api) -> None:
    tenant = api.tenant()
    key = api.key(tenant, "publisher")
    assert api.client.get("/v1/audit", headers=api.headers(key)).status_code == 403


def test_a_failed_transaction_leaves_neither_change_nor_audit_row(api: Api) -> None:
    name = unique_name("tenant")
    ctx = RequestContext(principal=ADMIN_TOKEN_PRINCIPAL, request_id="req-rolled-back")
    with (
        pytest.raises(RuntimeError, match="after the audit row"),
        transaction(api.state.session_factory) as session,
    ):
        tenants.create(session, ctx=ctx, name=name)
        session.flush()
        assert (
            session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.tenant == name)) == 1
        )
        raise RuntimeError("something failed after the audit row was written")
    with api.state.session_factory() as session:
        assert session.scalar(select(Tenant).where(Tenant.name == name)) is None
        assert (
            session.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.tenant == name)) == 0
        )
