"""GET /v1/audit."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from control_plane.audit import service
from control_plane.audit.schemas import AuditEventOut
from control_plane.auth.dependencies import require_admin
from control_plane.dependencies import get_session
from control_plane.timestamps import UtcDateTime

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(require_admin)])


@router.get("", response_model=list[AuditEventOut])
def list_events(
    tenant: str | None = None,
    model: str | None = None,
    action: str | None = None,
    since: UtcDateTime | None = None,
    until: UtcDateTime | None = None,
    limit: int = Query(100, ge=1, le=1000),
    session: Session = Depends(get_session, scope="function"),
) -> list[AuditEventOut]:
    """Audit events, newest first (admins only)."""
    events = service.query(
        session, tenant=tenant, model=model, action=action, since=since, until=until, limit=limit
    )
    return [AuditEventOut.model_validate(e) for e in events]
