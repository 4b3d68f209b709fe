"""Key endpoints (admins only): a tenant's keys, and admin keys (bound to no tenant)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.orm import Session

from control_plane import paging
from control_plane.auth.context import RequestContext, admin_context
from control_plane.auth.principal import Role
from control_plane.db.models import Tenant
from control_plane.dependencies import get_session, get_state
from control_plane.keys import service
from control_plane.keys.schemas import AdminKeyCreate, KeyCreate, KeyCreated, KeyOut
from control_plane.paging import Page
from control_plane.state import AppState
from control_plane.tenants import service as tenants

router = APIRouter(prefix="/v1/tenants/{tenant}/keys", tags=["keys"])
admin_router = APIRouter(prefix="/v1/keys", tags=["keys"])
KeyId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # a BIGINT column


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(
    tenant: str,
    body: KeyCreate,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> KeyCreated:
    """Create a key bound to the tenant; its secret is in this response only. It works until
    `expires_at` (never when left out, unless CP_KEY_MAX_TTL_S sets a longest life); 401 after."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    return _create(session, ctx=ctx, state=state, owner=owner, role=Role(body.role), body=body)


@router.get("", response_model=list[KeyOut])
def list_keys(
    tenant: str,
    request: Request,
    response: Response,
    page: Page[int] = Depends(paging.by_id),
    ctx: RequestContext = Depends(admin_context),
    session: Session = Depends(get_session, scope="function"),
) -> list[KeyOut]:
    """The tenant's keys without secrets, oldest first (paged: `limit`, `after`, `Link: rel="next"`)."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.page_for(session, tenant=owner, page=page)
    return paging.answer(request, response, found.map(KeyOut.model_validate), page)


@router.delete("/{key_id}", response_model=KeyOut)
def revoke_key(
    tenant: str,
    key_id: KeyId,
    ctx: RequestContext = Depends(admin_context),
    session: Session = Depends(get_session, scope="function"),
) -> KeyOut:
    """Revoke a key; requests with it get 401 from then on."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    return KeyOut.model_validate(service.revoke(session, ctx=ctx, tenant=owner, key_id=key_id))


@admin_router.post("", status_code=201, response_model=KeyCreated)
def create_admin_key(
    body: AdminKeyCreate,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> KeyCreated:
    """Create an admin key (each operator or system its own, so the audit log tells them apart and one
    can be revoked alone); its secret is in this response only. Expiry as for a tenant's keys."""
    return _create(session, ctx=ctx, state=state, owner=None, role=Role.ADMIN, body=body)


@admin_router.get("", response_model=list[KeyOut])
def list_admin_keys(
    request: Request,
    response: Response,
    page: Page[int] = Depends(paging.by_id),
    _: RequestContext = Depends(admin_context),
    session: Session = Depends(get_session, scope="function"),
) -> list[KeyOut]:
    """The admin keys without secrets, oldest first (paged). The bootstrap `CP_ADMIN_TOKEN` is not one."""
    found = service.page_for(session, tenant=None, page=page)
    return paging.answer(request, response, found.map(KeyOut.model_validate), page)


@admin_router.delete("/{key_id}", response_model=KeyOut)
def revoke_admin_key(
    key_id: KeyId,
    ctx: RequestContext = Depends(admin_context),
    session: Session = Depends(get_session, scope="function"),
) -> KeyOut:
    """Revoke an admin key (it may be the caller's own); requests with it get 401 from then on."""
    return KeyOut.model_validate(service.revoke(session, ctx=ctx, tenant=None, key_id=key_id))


def _create(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    owner: Tenant | None,
    role: Role,
    body: AdminKeyCreate,
) -> KeyCreated:
    key, plaintext = service.issue(
        session,
        ctx=ctx,
        settings=state.settings,
        tenant=owner,
        role=role,
        description=body.description,
        expires_at=body.expires_at,
    )
    return KeyCreated.model_validate({**KeyOut.model_validate(key).model_dump(), "key": plaintext})
