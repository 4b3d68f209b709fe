"""Every timestamp the management API returns is UTC with an explicit offset, on Postgres and SQLite."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from control_plane.db import migrate
from control_plane.timestamps import as_utc, format_utc
from tests.conftest import _admin_conninfo
from tests.support import model_files
from tests.support.api import Api
from tests.support.deploy import deploy_onnx

UTC_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
TIMESTAMP_FIELDS = {"created_at", "updated_at", "revoked_at", "last_used_at", "at"}


def _timestamps(document: Any) -> Iterator[tuple[str, Any]]:
    """Every (field, value) of a timestamp field anywhere in a JSON document."""
    if isinstance(document, list):
        for item in document:
            yield from _timestamps(item)
    elif isinstance(document, dict):
        for field, value in document.items():
            if field in TIMESTAMP_FIELDS:
                yield field, value
            yield from _timestamps(value)


@pytest.fixture(params=["postgres-non-utc-zone", "sqlite"])
def database(request: pytest.FixtureRequest, create_database: Callable[[], str], tmp_path: Path) -> str:
    """A migrated registry: Postgres whose sessions run in a non-UTC zone, or SQLite (naive datetimes)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    else:
        url = create_database()
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{name}\" SET timezone TO 'Asia/Kolkata'")
    migrate.upgrade(url)
    return url


def test_every_timestamp_is_utc_with_an_offset(make_api, database: str, tmp_path: Path) -> None:
    api: Api = make_api(database_url=database)
    started = datetime.now(UTC) - timedelta(seconds=5)
    d = deploy_onnx(api, tmp_path)
    predicted = api.client.post(
        f"/v1/predict/{d.model}", json={"inputs": {"x": [[1, 2, 3, 4]]}}, headers=api.headers(d.consumer_key)
    )
    assert predicted.status_code == 200, predicted.text
    api.state.key_usage.flush()  # last_used_at, as the periodic flush writes it
    base = f"/v1/tenants/{d.tenant}"
    model = f"{base}/models/{d.model}"
    second = api.upload(d.tenant, d.model, model_files.onnx_mlp(tmp_path / "v2.onnx", seed=1))
    assert second.status_code == 201, second.text
    api.wait_settled(d.tenant, d.model, 2)
    keys = api.client.get(f"{base}/keys", headers=api.headers()).json()
    consumer = next(k for k in keys if k["last_used_at"] is not None)
    revoked = api.client.delete(f"{base}/keys/{consumer['id']}", headers=api.headers())
    answers = {
        "upload": second,
        "revoke": revoked,
        "create tenant": api.client.post("/v1/tenants", json={"name": d.tenant + "x"}, headers=api.headers()),
        "create key": api.client.post(f"{base}/keys", json={"role": "consumer"}, headers=api.headers()),
        "create model": api.create_model(d.tenant, name="other", format="onnx"),
        "retire version": api.client.delete(f"{model}/versions/2", headers=api.headers()),
    }
    for path in ("/v1/tenants", base, f"{base}/keys", f"{base}/models", model, f"{model}/versions"):
        answers[path] = api.client.get(path, headers=api.headers())
    for path in (f"{model}/versions/1", f"{model}/aliases/production/history", "/v1/audit"):
        answers[path] = api.client.get(path, headers=api.headers())

    seen: set[str] = set()
    for what, response in answers.items():
        assert response.status_code in (200, 201), (what, response.text)
        for field, value in _timestamps(response.json()):
            if value is None:
                continue
            seen.add(field)
            assert UTC_ISO.match(value), (what, field, value)
            assert started <= datetime.fromisoformat(value) <= datetime.now(UTC), (what, field, value)
    assert seen == TIMESTAMP_FIELDS
    listed = api.client.get(f"{base}/keys", headers=api.headers()).json()
    assert next(k for k in listed if k["id"] == consumer["id"])["revoked_at"] == revoked.json()["revoked_at"]


def test_audit_time_filters_honour_the_offset(make_api, database: str) -> None:
    api: Api = make_api(database_url=database)
    tenant = api.tenant()
    now = datetime.now(UTC)
    ahead = timezone_offset(hours=5, minutes=30)
    behind = timezone_offset(hours=-8)

    def events(**params: str) -> list[dict[str, Any]]:
        response = api.client.get("/v1/audit", params={"tenant": tenant, **params}, headers=api.headers())
        assert response.status_code == 200, response.text
        return list(response.json())

    # The same instants written in other zones: an hour ago in +05:30 still includes the event,
    # an hour ahead in -08:00 excludes it (a filter that dropped the offset would get one of them wrong).
    assert len(events(since=(now - timedelta(hours=1)).astimezone(ahead).isoformat())) == 1
    assert events(since=(now + timedelta(hours=1)).astimezone(behind).isoformat()) == []
    assert len(events(until=(now + timedelta(minutes=10)).astimezone(behind).isoformat())) == 1
    assert events(until=(now - timedelta(minutes=10)).astimezone(ahead).isoformat()) == []


def timezone_offset(*, hours: int, minutes: int = 0) -> timezone:
    """A fixed-offset zone."""
    return timezone(timedelta(hours=hours, minutes=minutes))


def test_the_format_helpers() -> None:
    naive = datetime(2026, 1, 2, 3, 4, 5)
    assert format_utc(naive) == "2026-01-02T03:04:05.000000+00:00"
    kolkata = datetime(2026, 1, 2, 8, 34, 5, 7, tzinfo=timezone_offset(hours=5, minutes=30))
    assert as_utc(kolkata) == datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC)
    assert format_utc(kolkata) == "2026-01-02T03:04:05.000007+00:00"
