"""Audit retention on a real Postgres (and on SQLite): events older than `CP_AUDIT_RETENTION_DAYS` are deleted
in batches by the replica holding the lease, the purge itself is audited, recent events stay, and a served
app purges on start-up without anyone asking."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit import repository
from control_plane.audit.retention import AuditRetention
from control_plane.db import migrate
from control_plane.db.models import AuditEvent
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.settings import Settings
from tests.support.api import Api

NOW = datetime.now(UTC)


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, create_database: Callable[[], str], tmp_path: Path) -> str:
    """A database of its own, migrated (the session's holds other tests' events)."""
    url = create_database() if request.param == "postgres" else f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture
def sessions(fresh_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(fresh_url, pool_size=2)
    yield make_session_factory(engine)
    engine.dispose()


def add_events(factory: sessionmaker[Session], *, days_ago: float, count: int, action: str) -> None:
    with transaction(factory) as session:
        for n in range(count):
            session.add(
                AuditEvent(
                    created_at=NOW - timedelta(days=days_ago, seconds=n),
                    actor="admin-token",
                    action=action,
                    target=f"t{n}",
                )
            )


def actions(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return sorted(session.scalars(select(AuditEvent.action)))


def retention(factory: sessionmaker[Session], url: str, **overrides: object) -> AuditRetention:
    values: dict[str, object] = {
        "database_url": url,
        "retention_days": 30,
        "interval_s": 3600,
        "registry": CollectorRegistry(),
        "batch": 5,
    }
    return AuditRetention(factory, **{**values, **overrides})  # type: ignore[arg-type]


def test_old_events_go_in_batches_and_the_purge_is_audited(
    sessions: sessionmaker[Session], fresh_url: str
) -> None:
    add_events(sessions, days_ago=40, count=12, action="old")
    add_events(sessions, days_ago=29, count=3, action="recent")
    registry = CollectorRegistry()
    purger = retention(sessions, fresh_url, registry=registry)
    try:
        assert purger.purge(now=NOW) == 12  # three batches of 5, 5 and 2
        assert purger.purge(now=NOW) == 0  # nothing left to delete, nothing more audited
    finally:
        purger.stop()

    assert actions(sessions) == ["audit.purge", "recent", "recent", "recent"]
    with sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.purge")).one()
    assert event.actor == "system:audit-retention"
    assert event.after is not None and event.after["deleted"] == 12
    assert datetime.fromisoformat(event.after["older_than"]) == NOW - timedelta(days=30)
    assert registry.get_sample_value("cp_audit_purged_total") == 12
    assert registry.get_sample_value("cp_audit_purges_total", {"result": "ok"}) == 2
    assert registry.get_sample_value("cp_audit_purges_total", {"result": "failed"}) == 0
    assert registry.get_sample_value("cp_audit_purge_last_success_timestamp_seconds")


def test_only_the_replica_holding_the_lease_purges(
    create_database: Callable[[], str],
) -> None:
    url = create_database()
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=2)
    factory = make_session_factory(engine)
    first, second = retention(factory, url), retention(factory, url)
    try:
        add_events(factory, days_ago=40, count=3, action="old")
        assert first.purge(now=NOW) == 3  # it leads from now on
        add_events(factory, days_ago=40, count=2, action="old")
        assert second.purge(now=NOW) == 0  # not the leader: deletes nothing
        assert actions(factory).count("old") == 2
        first.stop()  # the leader goes away, its lock with it
        assert second.purge(now=NOW) == 2
    finally:
        first.stop()
        second.stop()
        engine.dispose()


def test_a_served_app_purges_what_is_older_than_the_retention_at_start(
    make_api: Callable[..., Api], create_database: Callable[[], str]
) -> None:
    url = create_database()
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=1)
    add_events(make_session_factory(engine), days_ago=400, count=4, action="ancient")
    engine.dispose()

    api = make_api(database_url=url, audit_retention_days=365)
    deadline = time.monotonic() + 30
    while True:
        listed = api.client.get("/v1/audit", headers=api.headers()).json()
        found = [e["action"] for e in listed]
        if "audit.purge" in found or time.monotonic() > deadline:
            break
        time.sleep(0.1)

    assert "ancient" not in found
    purge = next(e for e in listed if e["action"] == "audit.purge")
    assert purge["actor"] == "system:audit-retention" and purge["after"]["deleted"] == 4


@pytest.mark.parametrize("days", [0.5, -1, float("inf")])
def test_a_retention_under_a_day_or_unbounded_is_refused_at_start_up(days: float) -> None:
    with pytest.raises(ValidationError, match="audit_retention_days"):
        Settings(audit_retention_days=days)


def test_a_purge_that_fails_midway_audits_what_it_deleted(
    sessions: sessionmaker[Session], fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails (a failover, a statement timeout) must not leave deleted events unrecorded."""
    add_events(sessions, days_ago=40, count=12, action="old")
    registry = CollectorRegistry()
    purger = retention(sessions, fresh_url, registry=registry)
    batches = 0
    delete_older = repository.delete_older

    def failing(session: Session, **kwargs: Any) -> int:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise RuntimeError("connection lost")
        return delete_older(session, **kwargs)

    monkeypatch.setattr(repository, "delete_older", failing)
    try:
        with pytest.raises(RuntimeError):
            purger.purge(now=NOW)
    finally:
        purger.stop()

    with sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "audit.purge")).one()
    assert event.outcome == "failure"
    assert event.after == {
        "older_than": (NOW - timedelta(days=30)).isoformat(),
        "deleted": 10,
        "finished": False,
        "error": "RuntimeError",
    }
    assert actions(sessions).count("old") == 2
    assert registry.get_sample_value("cp_audit_purges_total", {"result": "failed"}) == 1  # AuditPurgeFailing
    assert registry.get_sample_value("cp_audit_purges_total", {"result": "ok"}) == 0
    assert registry.get_sample_value("cp_audit_purge_last_success_timestamp_seconds") == 0
