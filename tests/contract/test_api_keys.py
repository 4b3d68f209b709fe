"""API keys. Keys that expire: created with `expires_at` (or given the longest life `CP_KEY_MAX_TTL_S`
allows), they work until then and are refused after it everywhere a key is taken (the management API,
HTTP and gRPC inference, the console's sign-in and its open sessions), with a 401 that tells the key's
holder it expired; other keys go on working. Admin keys: each operator or system its own (`/v1/keys`),
told apart in the audit log and revoked alone. Against the real Postgres, S3 server and the session's
Triton."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import tritonclient.grpc as triton_grpc
from pydantic import ValidationError
from tritonclient.utils import InferenceServerException

from control_plane.db.session import make_engine
from control_plane.settings import Settings
from control_plane.timestamps import format_utc
from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import deploy_onnx
from tests.support.procs import free_port

X = [[0.5, -1.0, 2.0, 0.25]]
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}


@pytest.fixture
def make_keyed_api(make_api: Callable[..., Api], triton: RunningTriton) -> Callable[..., Api]:
    def make(**overrides: Any) -> Api:
        return make_api(grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url], **overrides)

    return make


def create_key(api: Api, tenant: str, key: str | None = None, **body: Any) -> httpx.Response:
    response: httpx.Response = api.client.post(
        f"/v1/tenants/{tenant}/keys", json={"role": "publisher", **body}, headers=api.headers(key)
    )
    return response


def grpc_infer(api: Api, model: str, key: str) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{api.settings.grpc_port}")
    try:
        tensor = triton_grpc.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.array(X, dtype=np.float32))
        client.infer(model, [tensor], headers={"authorization": f"Bearer {key}"})
    finally:
        client.close()


def test_an_expired_key_is_refused_everywhere_and_says_so(
    make_keyed_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_keyed_api()
    d = deploy_onnx(api, tmp_path)
    expires = datetime.now(UTC) + timedelta(seconds=4)
    created = create_key(api, d.tenant, expires_at=expires.isoformat())
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    assert datetime.fromisoformat(created.json()["expires_at"]) == expires
    models = f"/v1/tenants/{d.tenant}/models"
    infer = f"/v2/models/{d.model}/infer"

    assert api.client.get(models, headers=api.headers(key)).status_code == 200
    assert api.client.post(infer, json=BODY, headers=api.headers(key)).status_code == 200
    grpc_infer(api, d.model, key)
    console = httpx.Client(
        transport=api.client._transport, base_url=str(api.client.base_url)
    )  # its own cookies
    assert console.post("/console/login", data={"key": key}, follow_redirects=False).status_code == 303
    assert console.get("/console/tenants", follow_redirects=False).status_code == 200
    time.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.3)

    management = api.client.get(models, headers=api.headers(key))
    assert management.status_code == 401, management.text
    assert (
        management.json()["detail"] == f"API key expired at {format_utc(expires)}; ask an admin for a new one"
    )
    inference = api.client.post(infer, json=BODY, headers=api.headers(key))
    assert inference.status_code == 401, inference.text
    assert "expired at" in inference.json()["error"]
    with pytest.raises(InferenceServerException) as refused:
        grpc_infer(api, d.model, key)
    assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
    assert "expired at" in str(refused.value.message())
    session = console.get("/console/tenants", follow_redirects=False)
    assert session.status_code == 303 and session.headers["location"].startswith("/console/login")
    sign_in = console.post("/console/login", data={"key": key}, follow_redirects=False)
    assert sign_in.status_code != 303 and "expired at" in sign_in.text

    # Other keys go on working, and the list shows when this one expired.
    assert api.client.post(infer, json=BODY, headers=api.headers(d.consumer_key)).status_code == 200
    listed = api.client.get(f"/v1/tenants/{d.tenant}/keys", headers=api.headers()).json()
    assert [k["expires_at"] for k in listed if key.split("_")[1] == k["prefix"]] == [format_utc(expires)]


def test_expiry_is_checked_and_capped_by_the_longest_life_allowed(make_keyed_api: Callable[..., Api]) -> None:
    api = make_keyed_api(key_max_ttl_s=3600)
    tenant = api.tenant()
    now = datetime.now(UTC)

    capped = create_key(api, tenant)
    assert capped.status_code == 201, capped.text
    assert now + timedelta(seconds=3590) < datetime.fromisoformat(capped.json()["expires_at"])
    assert datetime.fromisoformat(capped.json()["expires_at"]) < now + timedelta(seconds=3610)
    too_long = create_key(api, tenant, expires_at=(now + timedelta(days=2)).isoformat())
    assert too_long.status_code == 422, too_long.text
    assert "CP_KEY_MAX_TTL_S" in too_long.json()["detail"]
    past = create_key(api, tenant, expires_at=(now - timedelta(seconds=1)).isoformat())
    assert past.status_code == 422 and "not in the future" in past.json()["detail"], past.text
    for bad in ("tomorrow", 12, "2026-13-01T00:00:00Z", "9999999-01-01T00:00:00Z"):
        answer = create_key(api, tenant, expires_at=bad)
        assert answer.status_code == 422, (bad, answer.text)
    audit = api.client.get(
        "/v1/audit", params={"action": "key.create", "tenant": tenant}, headers=api.headers()
    ).json()
    assert [event["after"]["expires_at"] for event in audit] == [capped.json()["expires_at"]]

    unlimited = make_keyed_api()  # the same registry, no longest life: a key without expiry never expires
    forever = create_key(unlimited, tenant)
    assert forever.status_code == 201 and forever.json()["expires_at"] is None, forever.text


def test_admin_keys_are_told_apart_in_the_audit_and_revoked_alone(
    make_keyed_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_keyed_api()
    d = deploy_onnx(api, tmp_path)
    created = api.client.post("/v1/keys", json={"description": "ci pipeline"}, headers=api.headers())
    assert created.status_code == 201, created.text
    ci = created.json()
    assert (ci["role"], ci["description"], ci["expires_at"]) == ("admin", "ci pipeline", None)

    tenant = f"made-by-ci-{ci['prefix']}"
    assert (
        api.client.post("/v1/tenants", json={"name": tenant}, headers=api.headers(ci["key"])).status_code
        == 201
    )
    as_tenant = {**api.headers(ci["key"]), "X-Tenant": d.tenant}
    assert api.client.post(f"/v2/models/{d.model}/infer", json=BODY, headers=as_tenant).status_code == 200
    audit = api.client.get("/v1/audit", params={"action": "tenant.create"}, headers=api.headers()).json()
    assert [e["actor"] for e in audit if e["target"].endswith(tenant)] == [f"admin-key:{ci['prefix']}"]
    listed = api.client.get("/v1/keys", headers=api.headers()).json()
    assert ci["id"] in [k["id"] for k in listed] and {k["role"] for k in listed} == {"admin"}

    tenant_keys = api.client.get(f"/v1/tenants/{d.tenant}/keys", headers=api.headers()).json()
    assert api.client.delete(f"/v1/keys/{tenant_keys[0]['id']}", headers=api.headers()).status_code == 404
    assert (
        api.client.delete(f"/v1/tenants/{d.tenant}/keys/{ci['id']}", headers=api.headers()).status_code == 404
    )
    for key in (d.publisher_key, d.consumer_key):
        assert api.client.get("/v1/keys", headers=api.headers(key)).status_code == 403
        assert api.client.post("/v1/keys", json={}, headers=api.headers(key)).status_code == 403
    for body in ({"role": "admin"}, {"description": "x" * 201}):
        assert api.client.post("/v1/keys", json=body, headers=api.headers()).status_code == 422
    promoted = api.client.post(f"/v1/tenants/{d.tenant}/keys", json={"role": "admin"}, headers=api.headers())
    assert promoted.status_code == 422, promoted.text

    revoked = api.client.delete(f"/v1/keys/{ci['id']}", headers=api.headers())
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None, revoked.text
    assert api.client.get("/v1/tenants", headers=api.headers(ci["key"])).status_code == 401
    assert api.client.post(f"/v2/models/{d.model}/infer", json=BODY, headers=as_tenant).status_code == 401
    assert api.client.get("/v1/tenants", headers=api.headers()).status_code == 200  # the bootstrap key


BAD_EXPIRIES: list[Any] = [
    "9999-12-31T23:59:59Z",  # "never": leave it out instead
    "9999-12-31T23:59:59-14:00",  # past the year 9999 once in UTC
    "0001-01-01T00:00:00+14:00",  # before the year 1 once in UTC
    "2100-01-01T00:00:00",  # no offset
    "2100-01-01",
    4102444800,  # seconds or milliseconds?
    "4102444800",
    True,
]


def test_an_expiry_is_an_iso_time_with_its_offset_within_a_century(
    make_keyed_api: Callable[..., Api],
) -> None:
    api = make_keyed_api()
    tenant = api.tenant()
    for expires_at in BAD_EXPIRIES:
        answer = create_key(api, tenant, expires_at=expires_at)
        assert answer.status_code == 422, (expires_at, answer.text)
        assert sorted(answer.json()) == ["detail", "error"], (expires_at, answer.text)
    answer = api.client.get("/v1/audit", params={"since": "0001-01-01T00:00:00+14:00"}, headers=api.headers())
    assert answer.status_code == 422, answer.text  # the audit filter's times too


def test_a_key_cannot_outlive_the_key_that_creates_it(make_keyed_api: Callable[..., Api]) -> None:
    """A leaked short-lived admin key must not mint keys that never expire."""
    api = make_keyed_api()
    tenant = api.tenant()
    soon = datetime.now(UTC) + timedelta(hours=1)
    short = api.client.post("/v1/keys", json={"expires_at": soon.isoformat()}, headers=api.headers()).json()

    minted = create_key(api, tenant, key=short["key"])
    later = (soon + timedelta(days=1)).isoformat()
    too_late = api.client.post("/v1/keys", json={"expires_at": later}, headers=api.headers(short["key"]))

    assert minted.status_code == 201 and minted.json()["expires_at"] == format_utc(soon), minted.text
    assert too_late.status_code == 422 and "the key that creates it" in too_late.json()["detail"]
    never = api.client.post("/v1/keys", json={}, headers=api.headers())  # the bootstrap token does not expire
    assert never.status_code == 201 and never.json()["expires_at"] is None


def test_postgres_sessions_are_in_utc_whatever_the_servers_zone(database_url: str) -> None:
    """A far expiry read back in a zone east of UTC would not fit a datetime, and break the key table."""
    berlin = f"{database_url}?options=-c%20timezone%3DEurope/Berlin"
    engine = make_engine(berlin, pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SHOW TIME ZONE").scalar() == "UTC"
            conn.rollback()
            assert conn.exec_driver_sql("SHOW TIME ZONE").scalar() == "UTC"  # no rollback undoes it
    finally:
        engine.dispose()
    plain = psycopg.connect("postgresql://" + berlin.split("://", 1)[1])
    try:
        assert plain.execute("SHOW TIME ZONE").fetchone() == ("Europe/Berlin",)  # the URL's zone holds
    finally:
        plain.close()


def test_an_endless_longest_key_life_is_refused_at_start_up() -> None:
    for value in (float("inf"), 1e12):
        with pytest.raises(ValidationError):
            Settings.model_validate({"key_max_ttl_s": value})
