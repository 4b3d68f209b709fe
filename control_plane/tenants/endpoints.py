"""Tenant endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.orm import Session

from control_plane import paging
from control_plane.auth.context import RequestContext, admin_context, request_context
from control_plane.dependencies import get_session
from control_plane.paging import Page
from control_plane.tenants import service
from control_plane.tenants.schemas import TenantCreate, TenantOut

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201, response_model=TenantOut)
def create_tenant(
    body: TenantCreate,
    ctx: RequestContext = Depends(admin_context),
    session: Session = Depends(get_session, scope="function"),
) -> TenantOut:
    """Create a tenant (admins only)."""
    return TenantOut.model_validate(service.create(session, ctx=ctx, name=body.name))


@router.get("", response_model=list[TenantOut])
def list_tenants(
    request: Request,
    response: Response,
    page: Page[str] = Depends(paging.by_name),
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> list[TenantOut]:
    """Tenants the caller may see, by name (paged: `limit`, `after`, `Link: rel="next"`)."""
    found = service.page_visible(session, ctx=ctx, page=page)
    return paging.answer(request, response, found.map(TenantOut.model_validate), page)


@router.get("/{tenant}", response_model=TenantOut)
def get_tenant(
    tenant: str,
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> TenantOut:
    """One tenant (404 for other tenants' keys)."""
    return TenantOut.model_validate(service.visible(session, ctx=ctx, name=tenant))
