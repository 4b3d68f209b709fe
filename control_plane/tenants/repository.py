"""SQL for tenants."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.db.models import Tenant
from control_plane.paging import Page, keyset


def get_by_name(session: Session, name: str) -> Tenant | None:
    """The live tenant called `name`."""
    return session.scalar(select(Tenant).where(Tenant.name == name, Tenant.deleted_at.is_(None)))


def list_all(session: Session, *, only_id: int | None = None, page: Page[str] | None = None) -> list[Tenant]:
    """Live tenants by name, or just the one with `only_id`; with `page`, its rows (one more, see paging)."""
    stmt = select(Tenant).where(Tenant.deleted_at.is_(None))
    if only_id is not None:
        stmt = stmt.where(Tenant.id == only_id)
    return list(session.scalars(keyset(stmt, page, Tenant.name)))


def exists_named(session: Session, name: str) -> bool:
    """Whether any tenant row (live or deleted) holds `name`."""
    return session.scalar(select(Tenant.id).where(Tenant.name == name)) is not None
