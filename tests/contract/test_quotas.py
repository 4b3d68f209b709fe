"""Tenant quotas, served by a real uvicorn on Postgres with artifacts in the S3 server: the most live models,
live versions and artifact bytes a tenant may hold. What a tenant holds is shown beside its quotas; a
create or upload past one is a 403 `QuotaExceeded` that says which quota and what to do, and stores
nothing; deletes make room; concurrent creates and uploads cannot together pass a limit; only admins set
quotas, and each change is audited."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio
from minio.error import S3Error
from sqlalchemy import text

from control_plane.artifacts.base import content_key
from tests.support import model_files
from tests.support.api import Api
from tests.support.builders import unique_name
from tests.support.registries import on_registry

RACERS = 8


@pytest.fixture
def served(make_served: Callable[..., Api]) -> Api:
    return make_served()


def onnx(tmp_path: Path, seed: int) -> Path:
    """A small ONNX model of bytes no other test uploads (the session's database is shared, and an artifact
    any live version uses stays); another seed gives other bytes."""
    name = f"x_{uuid.uuid4().hex[:12]}"
    return model_files.onnx_mlp(tmp_path / f"m{seed}.onnx", seed=seed, input_name=name)


def tenant_of(api: Api, tenant: str, key: str | None = None) -> dict[str, Any]:
    answer = api.client.get(f"/v1/tenants/{tenant}", headers=api.headers(key))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def set_quota(api: Api, tenant: str, key: str | None = None, **quota: Any) -> httpx.Response:
    response: httpx.Response = api.client.patch(
        f"/v1/tenants/{tenant}", json={"quota": quota}, headers=api.headers(key)
    )
    return response


def refused(answer: httpx.Response, quota: str) -> bool:
    """A 403 QuotaExceeded naming the quota it hit."""
    return (
        answer.status_code == 403
        and answer.json()["error"] == "QuotaExceeded"
        and quota in answer.json()["detail"]
    )


def together(api: Api, calls: list[Callable[[httpx.Client], httpx.Response]]) -> Counter[int]:
    """Each call on its own connection, all released at once: how many got each status."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[httpx.Client], httpx.Response]) -> int:
        with httpx.Client(base_url=str(api.client.base_url), headers=api.headers(), timeout=120) as client:
            start.wait()
            return call(client).status_code

    with ThreadPoolExecutor(len(calls)) as pool:
        return Counter(pool.map(run, calls))


def test_a_tenant_shows_what_it_holds_and_the_same_bytes_twice_count_once(
    served: Api, tmp_path: Path
) -> None:
    tenant = served.tenant()
    publisher = served.key(tenant, "publisher")
    fresh = tenant_of(served, tenant)
    assert fresh["quota"] == {
        "max_models": None,
        "max_versions": None,
        "max_artifact_bytes": None,
        "max_aliases": None,
        "max_keys": None,
    }
    assert fresh["usage"] == {"models": 0, "versions": 0, "artifact_bytes": 0, "aliases": 0, "keys": 1}

    artifact = onnx(tmp_path, 1)
    assert served.create_model(tenant, name="m", format="onnx", key=publisher).status_code == 201
    assert served.upload(tenant, "m", artifact, key=publisher).status_code == 201
    assert served.upload(tenant, "m", artifact, key=publisher).status_code == 201  # the same bytes again
    size = artifact.stat().st_size
    assert tenant_of(served, tenant, publisher)["usage"] == {
        "models": 1,
        "versions": 2,
        "artifact_bytes": size,
        "aliases": 0,
        "keys": 1,
    }

    assert served.client.delete(
        f"/v1/tenants/{tenant}/models/m/versions/1", headers=served.headers()
    ).is_success
    assert tenant_of(served, tenant)["usage"] == {
        "models": 1,
        "versions": 1,
        "artifact_bytes": size,
        "aliases": 0,
        "keys": 1,
    }
    assert served.client.delete(f"/v1/tenants/{tenant}/models/m", headers=served.headers()).is_success
    assert tenant_of(served, tenant)["usage"] == {
        "models": 0,
        "versions": 0,
        "artifact_bytes": 0,
        "aliases": 0,
        "keys": 1,
    }
    listed = served.client.get(
        "/v1/tenants", params={"after": tenant[:-1], "limit": 5}, headers=served.headers()
    )
    assert next(t for t in listed.json() if t["name"] == tenant)["usage"]["models"] == 0


def test_each_quota_refuses_in_the_users_terms_stores_nothing_and_deletes_make_room(
    served: Api, tmp_path: Path, minio_client: Minio
) -> None:
    tenant = served.tenant()
    publisher = served.key(tenant, "publisher")
    assert served.create_model(tenant, name="a", format="onnx", key=publisher).status_code == 201
    first = onnx(tmp_path, 1)
    assert served.upload(tenant, "a", first, key=publisher).status_code == 201

    assert set_quota(served, tenant, max_models=1).status_code == 200
    assert refused(served.create_model(tenant, name="b", format="onnx", key=publisher), "max_models")

    assert set_quota(served, tenant, max_versions=1).status_code == 200
    assert refused(served.upload(tenant, "a", onnx(tmp_path, 2), key=publisher), "max_versions")
    assert (
        served.client.post(
            f"/v1/tenants/{tenant}/models/a/versions/1/redeploy", headers=served.headers()
        ).status_code
        == 403
    )  # a redeploy is a version too

    size = first.stat().st_size
    other = onnx(tmp_path, 3)
    assert set_quota(served, tenant, max_versions=None, max_artifact_bytes=size + 10).status_code == 200
    too_big = served.upload(tenant, "a", other, key=publisher)
    assert (
        refused(too_big, "max_artifact_bytes") and f"{other.stat().st_size} bytes" in too_big.json()["detail"]
    )
    assert served.upload(tenant, "a", first, key=publisher).status_code == 201  # the same bytes: no more room
    with pytest.raises(S3Error):  # the refused artifact was never stored
        minio_client.stat_object(served.settings.s3_bucket, _object_of(other))

    # Deleting makes room: the model quota and the bytes of the first artifact once no version uses it.
    for number in (1, 2):
        assert served.client.delete(
            f"/v1/tenants/{tenant}/models/a/versions/{number}", headers=served.headers()
        ).is_success
    assert served.upload(tenant, "a", other, key=publisher).status_code == 201
    assert served.client.delete(f"/v1/tenants/{tenant}/models/a", headers=served.headers()).is_success
    assert served.create_model(tenant, name="b", format="onnx", key=publisher).status_code == 201


def _object_of(artifact: Path) -> str:
    """The object an artifact is stored as (content-addressed by its sha256)."""
    return content_key(hashlib.sha256(artifact.read_bytes()).hexdigest())


def test_a_tenant_over_its_byte_quota_is_refused_before_its_upload_body_arrives(
    served: Api, tmp_path: Path
) -> None:
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    artifact = onnx(tmp_path, 1)
    assert served.upload(tenant, "m", artifact).status_code == 201
    size = artifact.stat().st_size
    assert set_quota(served, tenant, max_artifact_bytes=size).status_code == 200
    assert served.upload(tenant, "m", artifact).status_code == 201  # at its limit: bytes it holds still go
    assert refused(served.upload(tenant, "m", onnx(tmp_path, 2)), "max_artifact_bytes")
    assert set_quota(served, tenant, max_artifact_bytes=size - 1).status_code == 200  # below what it holds

    url = httpx.URL(str(served.client.base_url))
    with socket.create_connection((url.host, url.port), timeout=30) as conn:
        conn.sendall(  # a body of 100 MB announced, 10 bytes sent
            f"POST /v1/tenants/{tenant}/models/m/versions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {served.admin_token}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {100 * 1024**2}\r\n\r\n--b\r\nCont".encode()
        )
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 403"), answer[:300]
    assert b"QuotaExceeded" in answer and b"max_artifact_bytes" in answer


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_concurrent_creates_and_uploads_cannot_together_pass_a_quota(
    make_served: Callable[..., Api], tmp_path: Path, registry: str
) -> None:
    served = on_registry(make_served, tmp_path, registry)
    tenant = served.tenant()
    assert set_quota(served, tenant, max_models=3, max_versions=4).status_code == 200

    def create(name: str) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.post(f"/v1/tenants/{tenant}/models", json={"name": name, "format": "onnx"})

    assert together(served, [create(f"m{i}") for i in range(RACERS)]) == Counter({201: 3, 403: RACERS - 3})
    [model, *_] = [
        m["name"] for m in served.client.get(f"/v1/tenants/{tenant}/models", headers=served.headers()).json()
    ]
    artifacts = [onnx(tmp_path, seed).read_bytes() for seed in range(RACERS)]

    def upload(data: bytes) -> Callable[[httpx.Client], httpx.Response]:
        files = {"file": ("m.onnx", data, "application/octet-stream")}
        return lambda c: c.post(f"/v1/tenants/{tenant}/models/{model}/versions", files=files)

    assert together(served, [upload(a) for a in artifacts]) == Counter({201: 4, 403: RACERS - 4})
    assert tenant_of(served, tenant)["usage"]["versions"] == 4


def test_alias_and_key_quotas_refuse_new_ones_and_a_delete_or_a_revoke_makes_room(
    served: Api, tmp_path: Path
) -> None:
    """Aliases count those of live models (every replica holds every alias in its routing table); moving
    one is no new alias. Keys count those neither revoked nor expired."""
    tenant = served.tenant()
    publisher = served.key(tenant, "publisher")
    assert served.create_model(tenant, name="a", format="onnx", key=publisher).status_code == 201
    assert served.upload(tenant, "a", onnx(tmp_path, 1), key=publisher).status_code == 201
    aliases = f"/v1/tenants/{tenant}/models/a/aliases"

    def promote(alias: str) -> httpx.Response:
        answer: httpx.Response = served.client.put(
            f"{aliases}/{alias}", json={"version": 1}, headers=served.headers(publisher)
        )
        return answer

    assert promote("staging").status_code == 200
    assert set_quota(served, tenant, max_aliases=1).status_code == 200
    missing = served.client.put(f"{aliases}/beta", json={"version": 9}, headers=served.headers(publisher))
    assert missing.status_code == 404, missing.text  # the request's own error first, not the quota
    beta = promote("beta")
    assert refused(beta, "max_aliases"), beta.text
    assert beta.json()["detail"] == (
        f"tenant '{tenant}' has 1 aliases and its quota allows 1 (max_aliases): delete an alias, "
        "or ask an admin to raise the quota"
    )
    assert promote("staging").status_code == 200  # a move of an alias it has is no new one
    assert tenant_of(served, tenant)["usage"]["aliases"] == 1
    assert served.client.delete(f"{aliases}/staging", headers=served.headers(publisher)).status_code == 204
    assert promote("beta").status_code == 200
    assert set_quota(served, tenant, max_aliases=None).status_code == 200

    keys = f"/v1/tenants/{tenant}/keys"
    assert set_quota(served, tenant, max_keys=2).status_code == 200  # it has one: the publisher's
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expiring = served.client.post(
        keys, json={"role": "consumer", "expires_at": soon}, headers=served.headers()
    )
    assert expiring.status_code == 201, expiring.text
    past = served.client.post(keys, json={"role": "consumer"}, headers=served.headers())
    assert refused(past, "max_keys") and "has 2 live API keys" in past.json()["detail"], past.text
    before = (datetime.now(UTC) - timedelta(seconds=60)).isoformat()
    late = served.client.post(keys, json={"role": "consumer", "expires_at": before}, headers=served.headers())
    assert late.status_code == 422, late.text  # the request's own error first, not the quota
    time.sleep(2.2)  # the key that expired no longer counts
    kept = served.client.post(keys, json={"role": "consumer"}, headers=served.headers())
    assert kept.status_code == 201, kept.text
    assert refused(served.client.post(keys, json={"role": "consumer"}, headers=served.headers()), "max_keys")
    assert served.client.delete(f"{keys}/{kept.json()['id']}", headers=served.headers()).status_code == 200
    assert served.client.post(keys, json={"role": "consumer"}, headers=served.headers()).status_code == 201
    assert tenant_of(served, tenant)["usage"]["keys"] == 2
    admin_key = served.client.post("/v1/keys", json={}, headers=served.headers())  # bound to no tenant
    assert admin_key.status_code == 201, admin_key.text


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_concurrent_key_creates_and_first_promotes_cannot_together_pass_a_quota(
    make_served: Callable[..., Api], tmp_path: Path, registry: str
) -> None:
    """SQLite ignores the tenant's row lock: there all 8 keys were created under a quota of 2 (and models and
    versions passed their quotas alike) until the lock took SQLite's write lock."""
    served = on_registry(make_served, tmp_path, registry)
    tenant = served.tenant()
    publisher = served.key(tenant, "publisher")
    assert served.create_model(tenant, name="a", format="onnx", key=publisher).status_code == 201
    assert served.upload(tenant, "a", onnx(tmp_path, 1), key=publisher).status_code == 201
    assert served.load(tenant, "a", 1)["state"] == "ready"
    assert set_quota(served, tenant, max_keys=3, max_aliases=2).status_code == 200

    def create_key(c: httpx.Client) -> httpx.Response:
        return c.post(f"/v1/tenants/{tenant}/keys", json={"role": "consumer"})

    assert together(served, [create_key] * RACERS) == Counter({201: 2, 403: RACERS - 2})

    def promote(alias: str) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.put(f"/v1/tenants/{tenant}/models/a/aliases/{alias}", json={"version": 1})

    assert together(served, [promote(f"a{i}") for i in range(RACERS)]) == Counter({200: 2, 403: RACERS - 2})
    assert tenant_of(served, tenant)["usage"]["aliases"] == 2


def test_only_admins_set_quotas_with_valid_values_and_each_change_is_audited(
    make_served: Callable[..., Api],
) -> None:
    served = make_served(tenant_max_models=5)
    tenant = served.tenant()
    publisher = served.key(tenant, "publisher")
    assert tenant_of(served, tenant)["quota"]["max_models"] == 5  # the default

    assert set_quota(served, tenant, publisher, max_models=100).status_code == 403
    for bad in (
        {"max_models": 0},
        {"max_models": "7"},
        {"max_models": True},
        {"max_gpus": 1},
        {"max_artifact_bytes": 2**63},
        {"max_versions": -1},
        {"max_aliases": 0},
        {"max_keys": 1.5},
    ):
        answer = set_quota(served, tenant, **bad)
        assert answer.status_code == 422, (bad, answer.text)
    assert (
        served.client.patch(
            f"/v1/tenants/{tenant}", json={"max_models": 1}, headers=served.headers()
        ).status_code
        == 422
    )  # the quota object is required, nothing else is taken
    assert set_quota(served, unique_name("nobody"), max_models=1).status_code == 404

    assert set_quota(served, tenant, max_models=2).json()["quota"]["max_models"] == 2
    assert set_quota(served, tenant, max_versions=9).json()["quota"] == {
        "max_models": 2,  # left out: kept
        "max_versions": 9,
        "max_artifact_bytes": None,
        "max_aliases": None,
        "max_keys": None,
    }
    assert (
        set_quota(served, tenant, max_models=None).json()["quota"]["max_models"] == 5
    )  # back to the default

    events = served.client.get(
        "/v1/audit", params={"tenant": tenant, "action": "tenant.quota"}, headers=served.headers()
    ).json()
    changes = [(e["before"], e["after"]) for e in events if e["action"] == "tenant.quota"]
    assert sorted(changes, key=str) == sorted(
        [
            ({"max_models": None}, {"max_models": 2}),
            ({"max_versions": None}, {"max_versions": 9}),
            ({"max_models": 2}, {"max_models": None}),
        ],
        key=str,
    )


def test_deleted_versions_give_their_artifacts_back_unless_a_live_version_uses_them(
    served: Api, tmp_path: Path, minio_client: Minio
) -> None:
    """Otherwise upload-and-delete in a loop would fill the shared store while usage stayed under quota."""
    tenant, other = served.tenant(), served.tenant()
    for owner in (tenant, other):
        assert served.create_model(owner, name="m", format="onnx").status_code == 201
    own, shared = onnx(tmp_path, 1), onnx(tmp_path, 2)
    for owner, artifact in ((tenant, own), (tenant, shared), (other, shared)):
        assert served.upload(owner, "m", artifact).status_code == 201
    bucket = served.settings.s3_bucket
    models = f"/v1/tenants/{tenant}/models"

    assert served.client.delete(f"{models}/m/versions/1", headers=served.headers()).is_success
    with pytest.raises(S3Error):
        minio_client.stat_object(bucket, _object_of(own))
    assert served.client.delete(f"{models}/m", headers=served.headers()).is_success
    minio_client.stat_object(bucket, _object_of(shared))  # the other tenant's live version uses it
    assert served.version(other, "m", 1)["sha256"] == hashlib.sha256(shared.read_bytes()).hexdigest()
    assert served.client.delete(
        f"/v1/tenants/{other}/models/m/versions/1", headers=served.headers()
    ).is_success
    with pytest.raises(S3Error):
        minio_client.stat_object(bucket, _object_of(shared))


def test_an_upload_waiting_for_a_busy_model_holds_up_no_other_model_of_its_tenant(
    served: Api, tmp_path: Path
) -> None:
    """A canary change holds its model's lock while it loads versions; an upload to that model waits for it,
    and must not hold the tenant's quota lock meanwhile."""
    tenant = served.tenant()
    assert set_quota(served, tenant, max_models=10, max_versions=10).status_code == 200
    for name in ("busy", "free"):
        assert served.create_model(tenant, name=name, format="onnx").status_code == 201
    with served.state.engine.connect() as conn:
        model_id = conn.execute(
            text(
                "SELECT m.id FROM models m JOIN tenants t ON t.id = m.tenant_id"
                " WHERE t.name = :tenant AND m.name = 'busy'"
            ),
            {"tenant": tenant},
        ).scalar_one()
    answers: dict[str, Any] = {}
    with served.state.engine.connect() as holder:  # what the canary change's transaction holds
        holder.execute(text("SELECT id FROM models WHERE id = :id FOR NO KEY UPDATE"), {"id": model_id})

        def upload_to_busy() -> None:
            answers["busy"] = served.upload(tenant, "busy", onnx(tmp_path, 1))

        waiting = threading.Thread(target=upload_to_busy)
        waiting.start()
        time.sleep(1.0)  # it waits for the model's lock
        started = time.monotonic()
        answers["free"] = served.upload(tenant, "free", onnx(tmp_path, 2))
        answers["create"] = served.create_model(tenant, name="new", format="onnx")
        answers["patch"] = set_quota(served, tenant, max_models=11)
        took = time.monotonic() - started
        assert waiting.is_alive()
        holder.rollback()
    waiting.join(timeout=60)

    assert [answers[k].status_code for k in ("free", "create", "patch", "busy")] == [201, 201, 200, 201]
    assert took < 3.0, took  # not queued behind the busy model


def test_a_quota_refusal_is_no_security_denial_and_crowds_none_out(served: Api) -> None:
    """Denied calls (401, 403) are audited up to a cap; a tenant retrying against its quota must not use it up
    and hide a probe with bad keys."""
    tenant = served.tenant()
    assert served.create_model(tenant, name="a", format="onnx").status_code == 201
    assert set_quota(served, tenant, max_models=1).status_code == 200
    for i in range(70):
        assert refused(served.create_model(tenant, name=f"b{i}", format="onnx"), "max_models")
    bad = served.client.get(f"/v1/tenants/{tenant}", headers={"Authorization": "Bearer cp_nothing_here"})
    assert bad.status_code == 401

    events = served.client.get("/v1/audit", params={"limit": 200}, headers=served.headers()).json()
    denied = [e for e in events if e["action"] == "request.denied"]
    assert not [e for e in denied if e.get("tenant") == tenant and e["after"]["status"] == 403]
    assert any(e["after"]["status"] == 401 for e in denied)
