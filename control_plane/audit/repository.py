"""SQL for audit events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CursorResult, delete, select, tuple_
from sqlalchemy.orm import Session

from control_plane.db.models import AuditEvent
from control_plane.paging import Page


@dataclass(frozen=True)
class AuditFilter:
    """Which events: each field given narrows the query (`until` is exclusive)."""

    tenant: str | None = None
    model: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def events(session: Session, *, where: AuditFilter, page: Page[int]) -> list[AuditEvent]:
    """Events newest first, the page's rows and one more; `page.after` is the id of the event before them."""
    stmt = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(page.fetch)
    for column, value in (
        (AuditEvent.tenant, where.tenant),
        (AuditEvent.model, where.model),
        (AuditEvent.action, where.action),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if where.since is not None:
        stmt = stmt.where(AuditEvent.created_at >= where.since)
    if where.until is not None:
        stmt = stmt.where(AuditEvent.created_at < where.until)
    if page.after is not None:
        # Keyset on (created_at, id), one index range: the cursor event's time, read in the same statement.
        at = select(AuditEvent.created_at).where(AuditEvent.id == page.after).scalar_subquery()
        stmt = stmt.where(tuple_(AuditEvent.created_at, AuditEvent.id) < tuple_(at, page.after))
    return list(session.scalars(stmt))


def delete_older(session: Session, *, older_than: datetime, batch: int) -> int:
    """Delete up to `batch` of the oldest events created before `older_than`; how many went."""
    oldest = (
        select(AuditEvent.id)
        .where(AuditEvent.created_at < older_than)
        .order_by(AuditEvent.created_at, AuditEvent.id)
        .limit(batch)
    )
    result = session.execute(delete(AuditEvent).where(AuditEvent.id.in_(oldest)))
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
