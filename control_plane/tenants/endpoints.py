"""Tenant endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from control_plane import paging
from control_plane.auth.context import RequestContext, admin_context, request_context
from control_plane.dependencies import get_session, get_state
from control_plane.paging import Page
from control_plane.state import AppState
from control_plane.tenants import service
from control_plane.tenants.schemas import TenantCreate, TenantOut, TenantPatch

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201, response_model=TenantOut)
def create_tenant(
    body: TenantCreate,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> TenantOut:
    """Create a tenant (admins only)."""
    tenant = service.create(session, ctx=ctx, name=body.name)
    return service.describe(session, tenant, settings=state.settings)


@router.get("", response_model=list[TenantOut])
def list_tenants(
    request: Request,
    response: Response,
    page: Page[str] = Depends(paging.by_name),
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> list[TenantOut]:
    """Tenants the caller may see, by name, with quotas and usage (paged: `limit`, `after`,
    `Link: rel="next"`)."""
    found = service.page_visible(session, ctx=ctx, page=page)
    described = service.describe_many(session, found.items, settings=state.settings)
    return paging.answer(request, response, paging.Listing(described, found.after), page)


@router.get("/{tenant}", response_model=TenantOut)
def get_tenant(
    tenant: str,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> TenantOut:
    """One tenant with its quotas and what it holds (404 for other tenants' keys)."""
    found = service.visible(session, ctx=ctx, name=tenant)
    return service.describe(session, found, settings=state.settings)


@router.patch("/{tenant}", response_model=TenantOut)
def update_tenant(
    tenant: str,
    body: TenantPatch,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> TenantOut:
    """Set a tenant's quotas (the most live models, live versions and artifact bytes it may hold) and its
    inference limits (requests a second, burst, requests in flight), admins only. A field left out keeps
    its value; null sets it back to the default (`CP_TENANT_MAX_*`, `CP_TENANT_RATE_LIMIT`, ...)."""
    found = service.visible(session, ctx=ctx, name=tenant)
    if body.quota is not None:
        service.set_quota(session, ctx=ctx, tenant=found, patch=body.quota)
    if body.limits is not None:
        service.set_limits(session, ctx=ctx, tenant=found, patch=body.limits)
    return service.describe(session, found, settings=state.settings)


@router.delete("/{tenant}", status_code=204)
def delete_tenant(
    tenant: str,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> None:
    """Offboard a tenant (admins only): its models are deleted (their versions unloaded and retired, their
    artifacts released), its keys revoked, and the tenant removed; from then on its keys get 401 and its
    names 404, on every replica. Audited as `tenant.delete` (with the models and keys it held), beside
    each `model.delete` and `key.revoke`; the audit trail stays, and the name is not reused."""
    found = service.visible(session, ctx=ctx, name=tenant)
    service.delete(session, ctx=ctx, state=state, tenant=found)
