"""Management requests that race each other, served by a real uvicorn on Postgres: a conflict is a 409, never
a 500; a change is audited once; an alias never names a retired version; and an artifact a committed version
uses is never cleaned up by an upload of the same bytes that failed."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from control_plane.db import hooks
from control_plane.db.models import Alias, Model, ModelVersion, Tenant
from control_plane.registry import artifact_guard
from control_plane.tenants import quota
from tests.support import model_files
from tests.support.api import Api
from tests.support.builders import unique_name
from tests.support.deploy import deploy_onnx
from tests.support.triton_models import MODEL, PYTHON_SPEC

RACERS = 10


def together(api: Api, calls: list[Callable[[httpx.Client], httpx.Response]]) -> list[httpx.Response]:
    """Each call on its own connection, all released at once."""
    start = threading.Barrier(len(calls))

    def run(call: Callable[[httpx.Client], httpx.Response]) -> httpx.Response:
        with httpx.Client(base_url=str(api.client.base_url), headers=api.headers(), timeout=120) as client:
            start.wait()
            return call(client)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def statuses(answers: list[httpx.Response]) -> Counter[int]:
    return Counter(a.status_code for a in answers)


def audited(api: Api, tenant: str, action: str) -> int:
    events = api.client.get(
        "/v1/audit", params={"tenant": tenant, "limit": 1000}, headers=api.headers()
    ).json()
    return sum(e["action"] == action for e in events)


@pytest.fixture
def served(make_served: Callable[..., Api]) -> Api:
    return make_served()


def test_creating_the_same_tenant_or_model_at_once_is_one_201_and_409s(served: Api) -> None:
    name = unique_name("race")
    tenants = together(served, [lambda c: c.post("/v1/tenants", json={"name": name})] * RACERS)
    models = together(
        served,
        [lambda c: c.post(f"/v1/tenants/{name}/models", json={"name": "m", "format": "onnx"})] * RACERS,
    )

    for answers in (tenants, models):
        assert statuses(answers)[201] == 1 and statuses(answers)[409] == RACERS - 1, statuses(answers)
        assert all(
            a.json()["error"] in ("Conflict", "TenantExists", "ModelExists")
            for a in answers
            if a.status_code == 409
        )
    assert audited(served, name, "tenant.create") == 1 and audited(served, name, "model.create") == 1


def test_deleting_a_model_or_revoking_a_key_at_once_is_done_and_audited_once(served: Api) -> None:
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    key_id = served.client.post(
        f"/v1/tenants/{tenant}/keys", json={"role": "consumer"}, headers=served.headers()
    ).json()["id"]

    deletes = together(served, [lambda c: c.delete(f"/v1/tenants/{tenant}/models/m")] * RACERS)
    revokes = together(served, [lambda c: c.delete(f"/v1/tenants/{tenant}/keys/{key_id}")] * RACERS)

    assert statuses(deletes) == {204: 1, 404: RACERS - 1}
    assert statuses(revokes) == {200: RACERS}  # revoking twice is harmless ...
    assert audited(served, tenant, "model.delete") == 1
    assert audited(served, tenant, "key.revoke") == 1  # ... and audited once


def test_a_version_deleted_while_an_alias_moves_onto_it_is_refused_and_the_alias_stays_valid(
    served: Api, tmp_path: Path
) -> None:
    live = deploy_onnx(served, tmp_path)  # v1 in production
    number = served.upload(
        live.tenant, live.model, model_files.onnx_mlp(tmp_path / "v2.onnx", seed=2)
    ).json()["version"]
    answers: list[httpx.Response] = []
    # A promote as it stands while it loads the version: the model locked (`repository.lock_model`),
    # the alias about to move onto it.
    with served.state.session_factory() as promote:
        model = promote.scalars(
            select(Model).join(Tenant).where(Tenant.name == live.tenant, Model.name == live.model)
        ).one()
        promote.get(Model, model.id, with_for_update={"key_share": True})
        deleting = threading.Thread(
            target=lambda: answers.append(
                served.client.delete(
                    f"/v1/tenants/{live.tenant}/models/{live.model}/versions/{number}",
                    headers=served.headers(),
                )
            )
        )
        deleting.start()
        time.sleep(0.5)
        target = promote.scalars(
            select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.version == number)
        ).one()
        alias = promote.scalars(
            select(Alias).where(Alias.model_id == model.id, Alias.name == "production")
        ).one()
        alias.version_id = target.id
        promote.commit()
    deleting.join(timeout=60)

    assert answers and answers[0].status_code == 409, answers and answers[0].text
    assert "production" in answers[0].json()["detail"]
    assert served.version(live.tenant, live.model, number)["state"] != "retired"


def test_the_clean_up_of_a_failed_upload_waits_for_an_upload_of_the_same_bytes(
    served: Api, tmp_path: Path
) -> None:
    state = served.state
    artifact = tmp_path / "same.onnx"
    artifact.write_bytes(unique_name("bytes no version of this session has").encode())
    with artifact.open("rb") as f:
        stored = state.artifacts.put(f, max_bytes=10**8)
    uploading = state.session_factory()
    uploading.execute(text("SELECT 1"))  # its transaction, as an upload's request has one
    artifact_guard.hold(uploading, stored.sha256)
    cleanup = threading.Thread(target=artifact_guard.drop_if_unused, args=(state, stored.sha256))
    cleanup.start()
    time.sleep(0.5)

    try:
        assert cleanup.is_alive()  # waits for the upload's transaction, on Postgres's advisory lock
        assert state.artifacts.exists(stored.sha256)
    finally:
        uploading.commit()  # (a version would now name it; this upload names nothing)
        hooks.committed(uploading)
        uploading.close()
    cleanup.join(timeout=30)
    assert not cleanup.is_alive()
    # It may have run before the upload's own after-commit hooks and kept the object (a leak, never a loss);
    # with no upload under way, the clean-up deletes it, as nothing uses it.
    artifact_guard.drop_if_unused(state, stored.sha256)
    assert not state.artifacts.exists(stored.sha256)


def test_an_upload_that_waits_for_a_settings_change_is_configured_by_it(served: Api, tmp_path: Path) -> None:
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(tmp_path / "m.onnx")
    answers: list[httpx.Response] = []
    # A PATCH as it stands before it commits: the model locked, its max_batch_size changed.
    with served.state.session_factory() as patch:
        model = patch.scalars(
            select(Model).join(Tenant).where(Tenant.name == tenant, Model.name == "m")
        ).one()
        patch.get(Model, model.id, with_for_update=True)
        uploading = threading.Thread(target=lambda: answers.append(served.upload(tenant, "m", artifact)))
        uploading.start()
        time.sleep(1.5)  # the upload is validated and waits for the model's lock to number its version
        model.spec = {**(model.spec or {}), "max_batch_size": 4}
        patch.commit()
    uploading.join(timeout=60)

    assert answers and answers[0].status_code == 201, answers and answers[0].text
    assert "max_batch_size: 4" in served.version(tenant, "m", answers[0].json()["version"])["config"]


SLOW_LOAD_S = 4.0


def slow_model(served: Api, tmp_path: Path) -> str:
    """A tenant with model `slow`, whose version 1 takes SLOW_LOAD_S to load (its initialize sleeps)."""
    tenant = served.tenant()
    assert served.create_model(tenant, name="slow", format="python", **PYTHON_SPEC).status_code == 201
    source = tmp_path / "model.py"
    source.write_text(MODEL.format(init=f"import time; time.sleep({SLOW_LOAD_S})", scale=2.0, offset=0.0))
    assert served.upload(tenant, "slow", source).status_code == 201
    return tenant


def test_a_promote_holds_nothing_while_its_version_loads(served: Api, tmp_path: Path) -> None:
    tenant = slow_model(served, tmp_path)
    answers: dict[str, Any] = {}

    def promote() -> None:
        answers["promote"] = served.client.put(
            f"/v1/tenants/{tenant}/models/slow/aliases/production",
            json={"version": 1},
            headers=served.headers(),
        )

    promoting = threading.Thread(target=promote)
    promoting.start()
    time.sleep(1.0)  # the version is loading (its initialize sleeps SLOW_LOAD_S)
    started = time.monotonic()
    answers["upload"] = served.upload(
        tenant, "slow", tmp_path / "model.py"
    )  # numbering a version locks the model
    answers["upload_s"] = time.monotonic() - started
    promoting.join(timeout=120)

    assert answers["promote"].status_code == 200, answers["promote"].text
    assert answers["upload"].status_code == 201, answers["upload"].text
    assert answers["upload_s"] < SLOW_LOAD_S - 1.5, answers["upload_s"]  # not queued behind the load


def _split_while_v2_loads(served: Api, tmp_path: Path) -> tuple[str, threading.Thread, dict[str, Any]]:
    """A slow model's v1 behind production and a v2 not loaded; a canary split naming v2 started in a
    thread (its answer goes to `answers["traffic"]`), returned once v2 is loading."""
    tenant = slow_model(served, tmp_path)
    alias = f"/v1/tenants/{tenant}/models/slow/aliases/production"
    assert served.client.put(alias, json={"version": 1}, headers=served.headers()).status_code == 200
    assert served.upload(tenant, "slow", tmp_path / "model.py").status_code == 201  # v2, not loaded
    answers: dict[str, Any] = {}

    def split() -> None:
        routes = {"routes": [{"version": 1, "weight": 90}, {"version": 2, "weight": 10}]}
        answers["traffic"] = served.client.put(alias + "/traffic", json=routes, headers=served.headers())

    splitting = threading.Thread(target=split)
    splitting.start()
    time.sleep(1.0)  # version 2 is loading (its initialize sleeps SLOW_LOAD_S)
    return tenant, splitting, answers


def test_a_traffic_change_holds_nothing_while_its_versions_load(served: Api, tmp_path: Path) -> None:
    """A canary split loaded the versions it names while holding the model's lock (and a database
    connection): an upload of the same model waited for the load."""
    tenant, splitting, answers = _split_while_v2_loads(served, tmp_path)
    started = time.monotonic()
    answers["upload"] = served.upload(tenant, "slow", tmp_path / "model.py")  # numbering locks the model
    answers["upload_s"] = time.monotonic() - started
    splitting.join(timeout=120)

    assert answers["traffic"].status_code == 200, answers["traffic"].text
    assert [r["version"] for r in answers["traffic"].json()["routes"]] == [1, 2]
    assert answers["upload"].status_code == 201, answers["upload"].text
    assert answers["upload_s"] < SLOW_LOAD_S - 1.5, answers["upload_s"]  # not queued behind the load


@pytest.mark.parametrize("what", ["version", "model"])
def test_a_traffic_change_naming_a_version_deleted_while_it_loads_is_404(
    served: Api, tmp_path: Path, what: str
) -> None:
    """The change loads its versions holding no lock, so a delete may commit meanwhile: it answered 409
    "it is retired (retired)" and audited a failed traffic change; the version is simply gone."""
    tenant, splitting, answers = _split_while_v2_loads(served, tmp_path)
    gone = f"/v1/tenants/{tenant}/models/slow" + ("/versions/2" if what == "version" else "")
    assert served.client.delete(gone, headers=served.headers()).is_success
    splitting.join(timeout=120)

    answer = answers["traffic"]
    assert answer.status_code == 404, answer.text
    events = served.client.get(
        "/v1/audit", params={"tenant": tenant, "action": "alias.traffic"}, headers=served.headers()
    ).json()
    assert [e for e in events if e["outcome"] == "failure"] == []


def test_a_load_of_a_version_deleted_while_it_loads_is_404(served: Api, tmp_path: Path) -> None:
    tenant = slow_model(served, tmp_path)
    answers: dict[str, httpx.Response] = {}

    def load() -> None:
        answers["load"] = served.client.post(
            f"/v1/tenants/{tenant}/models/slow/versions/1/load", headers=served.headers()
        )

    loading = threading.Thread(target=load)
    loading.start()
    time.sleep(1.0)  # the version is loading
    answers["delete"] = served.client.delete(
        f"/v1/tenants/{tenant}/models/slow/versions/1", headers=served.headers()
    )
    loading.join(timeout=120)

    assert answers["delete"].status_code == 200, answers["delete"].text
    assert answers["load"].status_code == 404, answers["load"].text  # not a 200 describing a retired version


def test_an_upload_whose_body_is_slow_holds_no_database_connection(served: Api, tmp_path: Path) -> None:
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(tmp_path / "m.onnx").read_bytes()
    boundary = "cpboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'.encode()
    body = head + artifact + f"\r\n--{boundary}--\r\n".encode()
    url = httpx.URL(str(served.client.base_url))
    pool = served.state.engine.pool
    with socket.create_connection((url.host, url.port), timeout=30) as conn:
        conn.sendall(
            f"POST /v1/tenants/{tenant}/models/m/versions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {served.admin_token}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:100]
        )
        time.sleep(1.0)  # the client is slow: the rest of the body has not come
        held = pool.checkedout()  # type: ignore[attr-defined]
        conn.sendall(body[100:])
        answer = conn.recv(65536)

    assert held == 0
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]


def test_a_redeploy_racing_the_delete_of_its_source_never_names_a_deleted_artifact(
    served: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delete gives back the artifacts no live version uses; a redeploy that read its source before the
    delete committed would then register a version of bytes already deleted."""
    checked = quota.check_version

    def slow_check(*args: Any, **kwargs: Any) -> None:  # a registration slower than the delete's clean-up
        time.sleep(1.0)
        checked(*args, **kwargs)

    monkeypatch.setattr(quota, "check_version", slow_check)
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(tmp_path / "m.onnx", input_name=f"x_{unique_name('r')[-8:]}")
    assert served.upload(tenant, "m", artifact).status_code == 201
    versions_path = f"/v1/tenants/{tenant}/models/m/versions"
    answers: dict[str, httpx.Response] = {}

    def call(name: str, method: str, path: str) -> threading.Thread:
        def run() -> None:
            answers[name] = served.client.request(method, path, headers=served.headers())

        thread = threading.Thread(target=run)
        thread.start()
        time.sleep(0.5)  # queued on the model's lock before the next one
        return thread

    with served.state.engine.connect() as holder:  # the model held, so that the delete queues first
        model_id = holder.execute(
            select(Model.id).join(Tenant, Tenant.id == Model.tenant_id).where(Tenant.name == tenant)
        ).scalar_one()
        holder.execute(text("SELECT id FROM models WHERE id = :id FOR NO KEY UPDATE"), {"id": model_id})
        threads = [
            call("delete", "DELETE", f"{versions_path}/1"),
            call("redeploy", "POST", f"{versions_path}/1/redeploy"),
        ]
        holder.rollback()
    for thread in threads:
        thread.join(timeout=60)

    assert answers["delete"].status_code == 200, answers["delete"].text
    if answers["redeploy"].status_code == 201:  # had it come first, its version must keep the bytes
        assert served.state.artifacts.exists(answers["redeploy"].json()["sha256"])
    else:
        assert answers["redeploy"].status_code == 404, answers["redeploy"].text
