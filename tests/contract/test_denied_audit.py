"""Denied management calls (401, 403) leave an audit row, and a flood of them at most the cap."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from control_plane.audit.denials import DENIED, DenialCap
from control_plane.db.models import AuditEvent
from control_plane.db.session import make_engine, make_session_factory
from tests.support.api import Api


def _denials(api: Api, **where: str) -> list[AuditEvent]:
    """The `request.denied` rows, oldest first, filtered by column values."""
    engine = make_engine(api.settings.database_url, pool_size=1)
    try:
        with make_session_factory(engine)() as session:
            stmt = select(AuditEvent).where(AuditEvent.action == DENIED).order_by(AuditEvent.id)
            for column, value in where.items():
                stmt = stmt.where(getattr(AuditEvent, column) == value)
            return list(session.scalars(stmt))
    finally:
        engine.dispose()


def test_a_denied_call_leaves_an_audit_row(api: Api) -> None:
    tenant = api.tenant()
    consumer = api.key(tenant, "consumer")
    path = f"/v1/tenants/{tenant}/models"
    forbidden = api.client.post(path, json={"name": "m", "format": "onnx"}, headers=api.headers(consumer))
    assert forbidden.status_code == 403
    anonymous = api.client.get(path, headers={"X-Request-ID": "denied-1"})
    assert anonymous.status_code == 401
    wrong_key = api.client.get(f"{path}/m", headers=api.headers("cp_0123456789ab_not-a-real-secret"))
    assert wrong_key.status_code == 401

    rows = _denials(api, tenant=tenant)
    assert [(r.actor, r.target, r.outcome) for r in rows] == [
        (f"key:{consumer.split('_')[1]}", f"POST {path}", "failure"),
        ("anonymous", f"GET {path}", "failure"),
        ("anonymous", f"GET {path}/m", "failure"),
    ]
    assert rows[0].actor_key_id is not None
    details = [r.after or {} for r in rows]
    assert [d["status"] for d in details] == [403, 401, 401]
    assert details[0]["detail"] == "consumer keys may only call inference endpoints"
    assert rows[1].request_id == "denied-1"
    assert details[2]["key_prefix"] == "0123456789ab" and rows[2].model == "m"
    listed = api.client.get("/v1/audit", params={"tenant": tenant, "action": DENIED}, headers=api.headers())
    assert [e["outcome"] for e in listed.json()] == ["failure"] * 3
    assert api.client.get(path, headers=api.headers()).json() == []  # the denied create changed nothing


def test_a_flood_of_denied_calls_is_capped(make_api) -> None:
    started = time.monotonic()  # the cap's first window opens when the app is built
    api: Api = make_api()
    cap = api.app.state.denial_cap
    tenant = f"flood-{time.monotonic_ns()}"
    path = f"/v1/tenants/{tenant}/models"

    def hammer(n: int) -> set[int]:
        return {api.client.get(path).status_code for _ in range(n)}

    calls = [500] * 4  # 2000 denials from 4 threads: far over the cap
    with ThreadPoolExecutor(len(calls)) as pool:
        statuses = set().union(*pool.map(hammer, calls))
    elapsed = time.monotonic() - started
    assert statuses == {401}
    windows = 1 + int(elapsed // cap.window_s)  # a flood longer than a window may fill the next one too
    written = len(_denials(api, tenant=tenant))
    assert cap.per_window <= written <= cap.per_window * windows, (written, elapsed)
    assert cap.dropped_total == sum(calls) - written


def test_the_cap_opens_again_in_the_next_window() -> None:
    now = [0.0]
    cap = DenialCap(2, window_s=60, clock=lambda: now[0])
    assert [cap.admit() for _ in range(4)] == [True, True, False, False]
    now[0] = 59.9
    assert cap.admit() is False
    now[0] = 60.0
    assert [cap.admit() for _ in range(3)] == [True, True, False]
    assert cap.dropped_total == 4


def test_denials_do_not_count_other_errors(api: Api) -> None:
    engine = make_engine(api.settings.database_url, pool_size=1)
    with engine.connect() as conn:
        before = conn.scalar(select(func.count()).select_from(AuditEvent))
    assert api.client.get("/v1/tenants/nobody-here", headers=api.headers()).status_code == 404
    assert api.client.post("/v1/tenants", json={"nom": 1}, headers=api.headers()).status_code == 422
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(AuditEvent)) == before
    engine.dispose()
