"""Key endpoints (admins only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.orm import Session

from control_plane import paging
from control_plane.auth.context import RequestContext, admin_context
from control_plane.auth.principal import Role
from control_plane.dependencies import get_session
from control_plane.keys import service
from control_plane.keys.schemas import KeyCreate, KeyCreated, KeyOut
from control_plane.paging import Page
from control_plane.tenants import service as tenants

router = APIRouter(prefix="/v1/tenants/{tenant}/keys", tags=["keys"])


@router.post("", status_code=201, response_model=KeyCreated)
def create_key(
    tenant: str,
    body: KeyCreate,
    ctx: RequestContext = Depends(admin_context),
    session: Session = Depends(get_session, scope="function"),
) -> KeyCreated:
    """Create a key bound to the tenant; its secret is in this response only."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    key, plaintext = service.create(
        session, ctx=ctx, tenant=owner, role=Role(body.role), description=body.description
    )
    return KeyCreated.model_validate({**KeyOut.model_validate(key).model_dump(), "key": plaintext})


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
    key_id: Annotated[int, Path(ge=1, le=2**63 - 1)],  # a BIGINT column
    ctx: RequestContext = Depends(admin_context),
    session: Session = Depends(get_session, scope="function"),
) -> KeyOut:
    """Revoke a key; requests with it get 401 from then on."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    return KeyOut.model_validate(service.revoke(session, ctx=ctx, tenant=owner, key_id=key_id))
