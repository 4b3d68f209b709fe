"""SQL for API keys."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from control_plane.db.models import ApiKey
from control_plane.paging import Page, keyset


def by_prefix(session: Session, prefix: str) -> ApiKey | None:
    """The key with `prefix`."""
    return session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))


def _owned_by(tenant_id: int | None) -> ColumnElement[bool]:
    """Keys of a tenant; of none (admin keys) for None."""
    return ApiKey.tenant_id.is_(None) if tenant_id is None else ApiKey.tenant_id == tenant_id


def for_tenant(session: Session, tenant_id: int | None, *, page: Page[int] | None = None) -> list[ApiKey]:
    """All keys of a tenant (None: the admin keys, bound to none), oldest first (with `page`: its rows)."""
    return list(session.scalars(keyset(select(ApiKey).where(_owned_by(tenant_id)), page, ApiKey.id)))


def get(session: Session, *, tenant_id: int | None, key_id: int, lock: bool = False) -> ApiKey | None:
    """One key of a tenant (None: an admin key), optionally locked for update and read afresh."""
    stmt = select(ApiKey).where(_owned_by(tenant_id), ApiKey.id == key_id)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalar(stmt)


def unrevoked(session: Session, *, tenant_id: int) -> list[ApiKey]:
    """The tenant's keys not revoked (expired ones included), oldest first, locked and read afresh."""
    stmt = (
        select(ApiKey)
        .where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(stmt))


def record_last_used(session: Session, used: Mapping[int, datetime]) -> None:
    """Each key's last use (key id -> when), in key order: the order every writer of several keys locks
    them in (a tenant's deletion revokes its keys), so two such writers cannot deadlock."""
    for key_id, when in sorted(used.items()):
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
