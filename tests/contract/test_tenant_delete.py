"""Deleting (offboarding) a tenant, against the real registry (Postgres and SQLite), S3 and Triton: its
models are deleted and unloaded, its keys revoked everywhere (management API, HTTP and gRPC inference, the
console, another replica), everything it held is audited, other tenants go on serving, its name is kept,
and creations racing the delete never leave a live model or key in a deleted tenant."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from tritonclient.utils import InferenceServerException

from control_plane.db.models import Alias, ApiKey, Model, ModelVersion, Tenant
from control_plane.registry import service as registry_service
from control_plane.tenants import repository as tenant_repository
from tests.contract.test_api_keys import BODY, grpc_infer
from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import deploy_onnx
from tests.support.procs import free_port
from tests.support.registries import on_registry


def _delete(api: Api, tenant: str, key: str | None = None) -> httpx.Response:
    response: httpx.Response = api.client.delete(f"/v1/tenants/{tenant}", headers=api.headers(key))
    return response


def _infer(api: Api, model: str, key: str) -> httpx.Response:
    response: httpx.Response = api.client.post(
        f"/v2/models/{model}/infer", json=BODY, headers=api.headers(key)
    )
    return response


def _audit(api: Api, tenant: str, action: str | None) -> list[dict[str, Any]]:
    """The tenant's audit events (of `action`; None: all), newest first."""
    params = {"tenant": tenant, **({"action": action} if action else {})}
    answer = api.client.get("/v1/audit", params=params, headers=api.headers())
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def _live_rows(api: Api, tenant: str) -> tuple[int, int]:
    """Live models and unrevoked keys the registry holds for the tenant, deleted or not."""
    with api.state.session_factory() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
        models = session.scalar(
            select(func.count()).where(Model.tenant_id == tenant_id, Model.deleted_at.is_(None))
        )
        keys = session.scalar(
            select(func.count()).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        )
        return int(models or 0), int(keys or 0)


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_a_deleted_tenant_is_offboarded_everywhere_and_others_go_on_serving(
    make_api: Callable[..., Api], triton: RunningTriton, tmp_path: Path, registry: str
) -> None:
    api = on_registry(
        make_api, tmp_path, registry, grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url]
    )
    gone = deploy_onnx(api, tmp_path)
    second = deploy_onnx(api, tmp_path, tenant=gone.tenant, model="ranker", seed=1, alias="staging")
    other = deploy_onnx(api, tmp_path)  # another tenant, same model name
    console = httpx.Client(transport=api.client._transport, base_url=str(api.client.base_url))
    signed_in = console.post("/console/login", data={"key": gone.publisher_key}, follow_redirects=False)
    assert signed_in.status_code == 303
    assert console.get("/console/tenants", follow_redirects=False).status_code == 200
    assert _infer(api, gone.model, gone.consumer_key).status_code == 200
    keys = [
        k["prefix"] for k in api.client.get(f"/v1/tenants/{gone.tenant}/keys", headers=api.headers()).json()
    ]

    deleted = _delete(api, gone.tenant)
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""

    # Its keys are refused everywhere, as unknown keys are: management, HTTP and gRPC inference, console.
    for key in (gone.publisher_key, gone.consumer_key):
        management = api.client.get(f"/v1/tenants/{gone.tenant}/models", headers=api.headers(key))
        assert management.status_code == 401, management.text
        assert _infer(api, gone.model, key).status_code == 401
    with pytest.raises(InferenceServerException) as refused:
        grpc_infer(api, gone.model, gone.consumer_key)
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    session = console.get("/console/tenants", follow_redirects=False)
    assert session.status_code == 303 and session.headers["location"].startswith("/console/login")

    # Admins see no such tenant; its versions are unloaded from Triton.
    for path in ("", "/models", f"/models/{gone.model}", "/keys"):
        missing = api.client.get(f"/v1/tenants/{gone.tenant}{path}", headers=api.headers())
        assert missing.status_code == 404, (path, missing.text)
        assert missing.json()["detail"] == f"tenant '{gone.tenant}' not found"
    listed = api.client.get("/v1/tenants", params={"limit": 1000}, headers=api.headers()).json()
    assert gone.tenant not in {t["name"] for t in listed} and other.tenant in {t["name"] for t in listed}
    deadline = time.monotonic() + 30
    health = api.state.tritons[0].health
    while health.is_model_ready(gone.triton_name) or health.is_model_ready(second.triton_name):
        assert time.monotonic() < deadline, "the deleted tenant's versions are still loaded"
        time.sleep(0.1)
    assert _live_rows(api, gone.tenant) == (0, 0)

    # The other tenant, with a model of the same name, is untouched.
    answer = _infer(api, other.model, other.consumer_key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == str(other.version)

    # The audit trail keeps what it held: the tenant, each model, each key.
    [event] = _audit(api, gone.tenant, "tenant.delete")
    assert event["target"] == f"tenant/{gone.tenant}" and event["actor"].startswith("admin")
    assert event["before"] == {"models": ["mlp", "ranker"], "keys": keys}
    assert event["after"] == {"deleted": True}
    assert sorted(e["model"] for e in _audit(api, gone.tenant, "model.delete")) == ["mlp", "ranker"]
    assert sorted(e["target"] for e in _audit(api, gone.tenant, "key.revoke")) == sorted(
        f"key/{k}" for k in keys
    )

    # Its name is kept: not given to a new tenant, and a second delete finds nothing.
    again = api.client.post("/v1/tenants", json={"name": gone.tenant}, headers=api.headers())
    assert again.status_code == 409, again.text
    assert again.json()["detail"] == (
        f"tenant '{gone.tenant}' was deleted and its name is kept for its audit trail: choose another name"
    )
    twice = _delete(api, gone.tenant)
    assert twice.status_code == 404 and twice.json()["detail"] == f"tenant '{gone.tenant}' not found"


def test_only_admins_delete_tenants_and_unknown_names_are_404(api: Api, tmp_path: Path) -> None:
    mine = deploy_onnx(api, tmp_path)
    theirs = deploy_onnx(api, tmp_path)
    for key in (mine.publisher_key, mine.consumer_key, theirs.publisher_key):
        denied = _delete(api, mine.tenant, key)
        assert denied.status_code == 403, denied.text
        assert denied.json()["detail"] == "admin role required"
    for name in ("no-such-tenant", "Bad..Name", "x" * 200):
        missing = _delete(api, name)
        assert missing.status_code == 404, (name, missing.text)
    assert _infer(api, mine.model, mine.consumer_key).status_code == 200  # none of those removed it


def test_another_replica_stops_serving_a_deleted_tenant(make_api: Callable[..., Api], tmp_path: Path) -> None:
    here = make_api()
    there = make_api(s3_bucket=here.settings.s3_bucket)  # a second replica on the same Postgres
    d = deploy_onnx(here, tmp_path)
    deadline = time.monotonic() + 10
    while _infer(there, d.model, d.consumer_key).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert _delete(here, d.tenant).status_code == 204
    deadline = time.monotonic() + 10
    while (answer := _infer(there, d.model, d.consumer_key)).status_code != 401:
        assert answer.status_code == 200, answer.text
        assert time.monotonic() < deadline, "the other replica still serves the deleted tenant"
        time.sleep(0.05)
    assert there.client.get(f"/v1/tenants/{d.tenant}", headers=there.headers()).status_code == 404


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
@pytest.mark.parametrize("first", ["create", "delete"])
@pytest.mark.parametrize("what", ["model", "key"])
def test_a_creation_racing_the_delete_leaves_nothing_live_in_the_deleted_tenant(
    make_api: Callable[..., Api],
    tmp_path: Path,
    registry: str,
    first: str,
    what: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`first == "create"`: the creation has inserted its row and pauses before its commit; the delete
    comes meanwhile, waits for it (the tenant's row lock on Postgres, the write lock on SQLite), and then
    deletes what it created. `first == "delete"`: the delete pauses holding its locks; the creation comes
    meanwhile, waits at its insert, and then finds the tenant deleted: 404, nothing created."""
    api = on_registry(make_api, tmp_path, registry)
    d = deploy_onnx(api, tmp_path)
    paused, go = threading.Event(), threading.Event()
    real_is_live, real_mark = tenant_repository.is_live, registry_service.mark_deleted

    def pause_creation(session: Any, tenant: Any) -> bool:
        if first == "create" and not paused.is_set():
            paused.set()
            go.wait(10)
        return real_is_live(session, tenant)

    def pause_delete(session: Any, **kwargs: Any) -> None:
        if first == "delete" and not paused.is_set():
            paused.set()
            go.wait(10)
        real_mark(session, **kwargs)

    monkeypatch.setattr(tenant_repository, "is_live", pause_creation)
    monkeypatch.setattr(registry_service, "mark_deleted", pause_delete)

    def create() -> httpx.Response:
        if what == "model":
            return api.create_model(d.tenant, name="late", format="onnx")
        body = {"role": "consumer"}
        response: httpx.Response = api.client.post(
            f"/v1/tenants/{d.tenant}/keys", json=body, headers=api.headers()
        )
        return response

    with ThreadPoolExecutor(2) as pool:
        leader = pool.submit(create if first == "create" else lambda: _delete(api, d.tenant))
        assert paused.wait(30)
        follower = pool.submit(lambda: _delete(api, d.tenant) if first == "create" else create())
        time.sleep(0.5)  # the follower is now waiting for the leader's locks
        assert not follower.done(), follower.result().text
        go.set()
        led, followed = leader.result(), follower.result()
    created, deleted = (led, followed) if first == "create" else (followed, led)
    assert deleted.status_code == 204, deleted.text
    if first == "create":
        assert created.status_code == 201, created.text
    else:
        assert created.status_code == 404, created.text
        assert created.json()["detail"] == f"tenant '{d.tenant}' not found"
    assert _live_rows(api, d.tenant) == (0, 0)
    assert _infer(api, d.model, d.consumer_key).status_code == 401


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_two_deletes_at_once_give_one_204_and_one_404(
    make_api: Callable[..., Api], tmp_path: Path, registry: str
) -> None:
    api = on_registry(make_api, tmp_path, registry)
    d = deploy_onnx(api, tmp_path)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: _delete(api, d.tenant), "ab"))
    assert sorted(a.status_code for a in answers) == [204, 404], [a.text for a in answers]
    assert len(_audit(api, d.tenant, "tenant.delete")) == 1
    assert len(_audit(api, d.tenant, "model.delete")) == 1


def _upload(api: Api, d: Any) -> httpx.Response:
    return api.upload(d.tenant, d.model, d.artifact)


CHANGES: dict[str, Callable[[Api, Any], httpx.Response]] = {
    "upload": _upload,
    "promote": lambda api, d: api.client.put(
        f"/v1/tenants/{d.tenant}/models/{d.model}/aliases/canary", json={"version": 1}, headers=api.headers()
    ),
    "traffic": lambda api, d: api.client.put(
        f"/v1/tenants/{d.tenant}/models/{d.model}/aliases/production/traffic",
        json={"routes": [], "shadow": {"version": 1, "percent": 50}},
        headers=api.headers(),
    ),
    "pins": lambda api, d: api.client.put(
        f"/v1/tenants/{d.tenant}/models/{d.model}/placement",
        json={"pinned_aliases": ["production"]},
        headers=api.headers(),
    ),
    "patch": lambda api, d: api.client.patch(
        f"/v1/tenants/{d.tenant}/models/{d.model}", json={"max_batch_size": 4}, headers=api.headers()
    ),
    "delete": lambda api, d: api.client.delete(
        f"/v1/tenants/{d.tenant}/models/{d.model}", headers=api.headers()
    ),
}


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_of_a_model_racing_its_tenants_delete_is_404_and_lands_nowhere(
    make_api: Callable[..., Api],
    tmp_path: Path,
    registry: str,
    change: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The change reads the model while the delete holds its locks, and writes after the delete commits.
    On SQLite, which ignores the model's row lock, each went ahead (201, 200, 204): an upload left a live
    version (its artifact never freed) in the deleted model, a promote a new alias, and every one an
    audit event after `tenant.delete`. (Found by a review; Postgres refused them all.)"""
    api = on_registry(make_api, tmp_path, registry)
    d = deploy_onnx(api, tmp_path)
    paused, go = threading.Event(), threading.Event()
    real_mark = registry_service.mark_deleted

    def pause_delete(session: Any, **kwargs: Any) -> None:
        if not paused.is_set():
            paused.set()
            go.wait(20)
        real_mark(session, **kwargs)

    monkeypatch.setattr(registry_service, "mark_deleted", pause_delete)
    with ThreadPoolExecutor(2) as pool:
        deleting = pool.submit(_delete, api, d.tenant)
        assert paused.wait(30)
        changing = pool.submit(CHANGES[change], api, d)
        time.sleep(0.5)  # it has read the model, and waits for the delete's locks to write
        go.set()
        deleted, changed = deleting.result(), changing.result()
    assert deleted.status_code == 204, deleted.text
    assert changed.status_code == 404, changed.text
    with api.state.session_factory() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == d.tenant))
        live = session.scalar(
            select(func.count())
            .select_from(ModelVersion)
            .join(Model, Model.id == ModelVersion.model_id)
            .where(Model.tenant_id == tenant_id, ModelVersion.state != "retired")
        )
        assert live == 0
        aliases = session.scalar(
            select(func.count()).select_from(Alias).join(Model).where(Model.tenant_id == tenant_id)
        )
    actions = [e["action"] for e in reversed(_audit(api, d.tenant, None))]
    assert actions[-1] == "tenant.delete", actions  # nothing audited after it
    assert aliases == 1  # production, kept with its deleted model; no new one
