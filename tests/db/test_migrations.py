"""Migrations: empty -> head -> base -> head on Postgres and SQLite, with no drift."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect

from control_plane.db import migrate
from control_plane.db.base import Base
from control_plane.db.session import make_engine

REGISTRY_TABLES = {t for t in Base.metadata.tables}


def _tables(url: str) -> set[str]:
    engine = make_engine(url, pool_size=1)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_postgres_without_drift(create_database: Callable[[], str]) -> None:
    url = create_database()
    assert _tables(url) == set()

    migrate.upgrade(url)
    assert _tables(url) == REGISTRY_TABLES
    migrate.check(url)

    migrate.downgrade(url, "base")
    assert _tables(url) == set()

    migrate.upgrade(url)
    assert _tables(url) == REGISTRY_TABLES
    migrate.check(url)


def test_upgrade_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    assert _tables(url) == REGISTRY_TABLES
    migrate.check(url)
    migrate.downgrade(url, "base")
    assert _tables(url) == set()


def test_check_detects_drift(create_database: Callable[[], str]) -> None:
    """`alembic check` must fail when the schema lags the models, or the drift test proves nothing."""
    url = create_database()
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE tenants DROP COLUMN deleted_at")
    engine.dispose()
    with pytest.raises(Exception, match="New upgrade operations detected"):
        migrate.check(url)


def test_sqlite_down_and_up_keeps_keys_and_the_audit_links_to_them(tmp_path: Path) -> None:
    """A batch migration rebuilds a table (drop, create, copy): with foreign keys on, the drop fired
    ON DELETE CASCADE (every key went with 0006's tenants) and SET NULL (the audit lost its key links)."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO tenants (id, name) VALUES (1, 'acme')")
            conn.exec_driver_sql(
                "INSERT INTO api_keys (id, tenant_id, role, prefix, key_hash)"
                " VALUES (7, 1, 'publisher', 'abc', ?)",
                ("0" * 64,),
            )
            conn.exec_driver_sql(
                "INSERT INTO audit_events (actor_key_id, actor, action, target, outcome)"
                " VALUES (7, 'key:abc', 'model.create', 'model/acme/m', 'success')"
            )
        migrate.downgrade(url, "0005")
        migrate.upgrade(url)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT id, prefix FROM api_keys").fetchall() == [(7, "abc")]
            assert conn.exec_driver_sql("SELECT actor_key_id FROM audit_events").fetchall() == [(7,)]
    finally:
        engine.dispose()
