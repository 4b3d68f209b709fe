"""GET /v1/audit."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from control_plane import paging
from control_plane.audit import service
from control_plane.audit.repository import AuditFilter
from control_plane.audit.schemas import AuditEventOut
from control_plane.auth.dependencies import require_admin
from control_plane.dependencies import get_session
from control_plane.paging import Page
from control_plane.timestamps import UtcDateTime

router = APIRouter(prefix="/v1/audit", tags=["audit"], dependencies=[Depends(require_admin)])


@router.get("", response_model=list[AuditEventOut])
def list_events(
    request: Request,
    response: Response,
    tenant: str | None = None,
    model: str | None = None,
    action: str | None = None,
    since: UtcDateTime | None = None,
    until: UtcDateTime | None = None,
    page: Page[int] = Depends(paging.by_id),
    session: Session = Depends(get_session, scope="function"),
) -> list[AuditEventOut]:
    """Audit events, newest first (admins only; paged: `limit`, `after`, `Link: rel="next"`)."""
    where = AuditFilter(tenant=tenant, model=model, action=action, since=since, until=until)
    found = service.query(session, where=where, page=page)
    return paging.answer(request, response, found.map(AuditEventOut.model_validate), page)
