"""Write audit events in the caller's transaction, and query them."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from control_plane.audit import repository
from control_plane.audit.repository import AuditFilter
from control_plane.auth.principal import Principal
from control_plane.db.models import AuditEvent
from control_plane.paging import Listing, Page, cut


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


def query(session: Session, *, where: AuditFilter, page: Page[int]) -> Listing[AuditEvent]:
    """A page of audit events, newest first, filtered by whatever `where` gives."""
    return cut(repository.events(session, where=where, page=page), page, key=lambda e: e.id)
