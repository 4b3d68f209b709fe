"""Console pages over the whole platform: audit log (admins), instances (admins), live model figures."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import HTMLResponse

from control_plane.audit import service as audit
from control_plane.audit.repository import AuditFilter
from control_plane.audit.schemas import AuditEventOut
from control_plane.console.auth import ConsoleUser, app_state, current_user
from control_plane.console.live import LiveStats
from control_plane.console.render import page
from control_plane.db.session import transaction
from control_plane.errors import Forbidden, InvalidRequest
from control_plane.fleet import service as fleet
from control_plane.paging import Page
from control_plane.tenants import service as tenants
from control_plane.timestamps import as_utc

router = APIRouter()
POLL_S = 2


def _admin(user: ConsoleUser) -> None:
    if not user.is_admin:
        raise Forbidden("admin role required")


def _moment(value: str | None, what: str) -> datetime | None:
    """A date or ISO 8601 time from a filter field (UTC unless it says otherwise)."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidRequest(f"{what}: expected a date or time like 2026-11-21 or 2026-11-21T10:04") from None
    return as_utc(moment)


def _blank_none(value: str | None) -> str | None:
    return value.strip() or None if value is not None else None


@router.get("/audit", response_class=HTMLResponse)
def audit_page(
    request: Request,
    tenant: str | None = None,
    model: str | None = None,
    action: str | None = None,
    since: str | None = None,
    until: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """Audit events, newest first, filtered; htmx asks for the table rows alone."""
    _admin(user)
    since_at, until_at = _moment(since, "since"), _moment(until, "until")
    with transaction(app_state(request).session_factory) as session:
        where = AuditFilter(
            tenant=_blank_none(tenant),
            model=_blank_none(model),
            action=_blank_none(action),
            since=since_at,
            until=until_at,
        )
        found = audit.query(session, where=where, page=Page(limit=limit))
        events = [AuditEventOut.model_validate(e) for e in found.items]
    context = {
        "events": events,
        "filters": {"tenant": tenant, "model": model, "action": action, "since": since, "until": until},
        "limit": limit,
    }
    fragment = request.headers.get("hx-request") == "true"
    return page(request, "_audit_rows.html" if fragment else "audit.html", context)


@router.get("/instances", response_class=HTMLResponse)
def instances_page(request: Request, user: ConsoleUser = Depends(current_user)) -> HTMLResponse:
    """The Triton instances with their placements (desired and observed)."""
    _admin(user)
    state = app_state(request)
    with transaction(state.session_factory) as session:
        found = fleet.list_instances(session, state=state)
    return page(request, "instances.html", {"instances": found})


def live_stats(request: Request) -> LiveStats:
    """The console's reader of this process's data-plane metrics (one per app)."""
    registry = app_state(request).metrics.registry
    live: LiveStats | None = getattr(request.app.state, "live", None)
    if live is None or live.registry is not registry:
        live = request.app.state.live = LiveStats(registry)
    return live


def _visible_tenant(request: Request, user: ConsoleUser) -> str | None:
    """None for admins (every tenant), else the name of the caller's tenant."""
    if user.is_admin:
        return None
    with transaction(app_state(request).session_factory) as session:
        own = tenants.list_visible(session, ctx=user.ctx)
    return own[0].name if own else "\x00"  # a key without a tenant sees nothing


@router.get("/live", response_class=HTMLResponse)
def live_page(request: Request, user: ConsoleUser = Depends(current_user)) -> HTMLResponse:
    """Request rate, error rate and p50/p99 per model, refreshed every few seconds."""
    return page(request, "live.html", {"poll_s": POLL_S, "model": None, "tenant": None})


@router.get("/live/rows", response_class=HTMLResponse)
def live_rows(
    request: Request,
    tenant: str | None = None,
    model: str | None = None,
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """The live table's rows (polled); narrowed to one tenant's model when asked."""
    visible = _visible_tenant(request, user)
    rows = [
        f
        for f in live_stats(request).figures(tenant=visible)
        if (tenant is None or f.tenant == tenant) and (model is None or f.model == model)
    ]
    return page(request, "_live_rows.html", {"rows": rows})
