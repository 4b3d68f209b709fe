"""Alias endpoints: promote, roll back, history, traffic (canary and shadow)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from control_plane import paging
from control_plane.auth.context import RequestContext, request_context
from control_plane.db.models import Model, Tenant
from control_plane.dependencies import get_session, get_state, waiting_for_loads
from control_plane.lifecycle import service, traffic
from control_plane.lifecycle.schemas import AliasMove, HistoryEntry, Promote, Rollback, Traffic, TrafficOut
from control_plane.paging import Page
from control_plane.registry.service import get_model
from control_plane.state import AppState
from control_plane.tenants import service as tenants

router = APIRouter(prefix="/v1/tenants/{tenant}/models/{model}/aliases/{alias}", tags=["aliases"])


def _owner(session: Session, ctx: RequestContext, tenant: str, model: str) -> tuple[Tenant, Model]:
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    return owner, get_model(session, tenant=owner, name=model)


@router.put("", response_model=AliasMove)
async def promote(
    tenant: str,
    model: str,
    alias: str,
    body: Promote,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> AliasMove:
    """Load the version if needed, wait until ready, then switch the alias with history and audit."""

    def promote() -> AliasMove:
        owner, found = _owner(session, ctx, tenant, model)
        return service.promote(
            session,
            ctx=ctx,
            state=state,
            tenant=owner,
            model=found,
            alias_name=alias,
            number=body.version,
            reason=body.reason,
        )

    return await waiting_for_loads(state, promote)


@router.delete("", status_code=204)
def delete_alias(
    tenant: str,
    model: str,
    alias: str,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> None:
    """Remove the alias with its canary split, shadow and history (audited with what it was). Requests
    naming it get 404; the versions it named can be deleted once nothing else uses them."""
    owner, found = _owner(session, ctx, tenant, model)
    traffic.delete_alias(session, ctx=ctx, state=state, tenant=owner, model=found, alias_name=alias)


@router.post("/rollback", response_model=AliasMove)
async def rollback(
    tenant: str,
    model: str,
    alias: str,
    body: Rollback | None = None,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> AliasMove:
    """Back to the alias' previous version (or `to_version`), reloading it first if needed."""
    given = body or Rollback()

    def rollback() -> AliasMove:
        owner, found = _owner(session, ctx, tenant, model)
        return service.rollback(
            session,
            ctx=ctx,
            state=state,
            tenant=owner,
            model=found,
            alias_name=alias,
            to_version=given.to_version,
            reason=given.reason,
        )

    return await waiting_for_loads(state, rollback)


@router.get("/history", response_model=list[HistoryEntry])
def history(
    tenant: str,
    model: str,
    alias: str,
    request: Request,
    response: Response,
    page: Page[int] = Depends(paging.by_id),
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> list[HistoryEntry]:
    """Every move of the alias: from, to, who, when, why (newest first; paged: `limit`, `after`, `Link`)."""
    _, found = _owner(session, ctx, tenant, model)
    return paging.answer(
        request, response, service.history(session, model=found, alias_name=alias, page=page), page
    )


@router.put("/traffic", response_model=TrafficOut)
async def set_traffic(
    tenant: str,
    model: str,
    alias: str,
    body: Traffic,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> TrafficOut:
    """Canary weights (sum 100, sticky per X-Routing-Key) and a shadow; empty routes clear the split.
    Every version named is loaded first if needed."""

    def set_routes() -> TrafficOut:
        owner, found = _owner(session, ctx, tenant, model)
        return traffic.set_traffic(
            session, ctx=ctx, state=state, tenant=owner, model=found, alias_name=alias, body=body
        )

    return await waiting_for_loads(state, set_routes)


@router.get("/traffic", response_model=TrafficOut)
def get_traffic(
    tenant: str,
    model: str,
    alias: str,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> TrafficOut:
    """The alias' split, shadow, and shadow comparison statistics."""
    owner, found = _owner(session, ctx, tenant, model)
    return traffic.get_traffic(session, state=state, tenant=owner, model=found, alias_name=alias)
