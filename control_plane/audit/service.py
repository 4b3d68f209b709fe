"""Write audit events in the caller's transaction, and query them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.auth.principal import Principal
from control_plane.db.models import AuditEvent


def record(
    session: Session,
    *,
    actor: Principal,
    action: str,
    target: str,
    tenant: str | None = None,
    model: str | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    outcome: str = "success",
    request_id: str | None = None,
) -> AuditEvent:
    """Add one audit event to the session (committed or rolled back with the change)."""
    event = AuditEvent(
        actor_key_id=actor.key_id,
        actor=actor.label,
        action=action,
        target=target,
        tenant=tenant,
        model=model,
        before=before,
        after=after,
        outcome=outcome,
        request_id=request_id,
    )
    session.add(event)
    session.flush()
    return event


def query(
    session: Session,
    *,
    tenant: str | None = None,
    model: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[AuditEvent]:
    """Audit events, newest first, filtered by whatever is given."""
    stmt = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit)
    if tenant is not None:
        stmt = stmt.where(AuditEvent.tenant == tenant)
    if model is not None:
        stmt = stmt.where(AuditEvent.model == model)
    if action is not None:
        stmt = stmt.where(AuditEvent.action == action)
    if since is not None:
        stmt = stmt.where(AuditEvent.created_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.created_at < until)
    return list(session.scalars(stmt))
