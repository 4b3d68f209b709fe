"""Create, verify, list and revoke API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.principal import Principal, Role
from control_plane.db.models import ApiKey, Tenant
from control_plane.errors import NotFound
from control_plane.keys import repository, secrets
from control_plane.paging import Listing, Page, cut

if TYPE_CHECKING:  # auth.context imports this module
    from control_plane.auth.context import RequestContext


def verify(session: Session, token: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None for anything else."""
    prefix = secrets.prefix_of(token)
    if prefix is None:
        return None
    key = repository.by_prefix(session, prefix)
    if key is None:
        return None
    if key.revoked_at is not None or not secrets.matches(token, key.key_hash):
        return None
    return Principal(role=Role(key.role), tenant_id=key.tenant_id, key_id=key.id, label=f"key:{key.prefix}")


def create(
    session: Session, *, ctx: RequestContext, tenant: Tenant, role: Role, description: str | None
) -> tuple[ApiKey, str]:
    """A new key bound to `tenant`; the plaintext is returned once and never stored."""
    new = secrets.generate()
    key = ApiKey(
        tenant_id=tenant.id,
        role=role.value,
        prefix=new.prefix,
        key_hash=new.key_hash,
        description=description,
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="key.create",
        target=f"key/{key.prefix}",
        tenant=tenant.name,
        after={"id": key.id, "role": key.role, "prefix": key.prefix},
        request_id=ctx.request_id,
    )
    return key, new.plaintext


def page_for(session: Session, *, tenant: Tenant, page: Page[int]) -> Listing[ApiKey]:
    """A page of the tenant's keys, oldest first (never their secrets)."""
    return cut(repository.for_tenant(session, tenant.id, page=page), page, key=lambda k: k.id)


def revoke(session: Session, *, ctx: RequestContext, tenant: Tenant, key_id: int) -> ApiKey:
    """Revoke a key; revoking twice is harmless (and audited once, however close the two are)."""
    key = repository.get(session, tenant_id=tenant.id, key_id=key_id, lock=True)
    if key is None:
        raise NotFound(f"key {key_id} not found")
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
        session.flush()
        audit.record(
            session,
            actor=ctx.principal,
            action="key.revoke",
            target=f"key/{key.prefix}",
            tenant=tenant.name,
            before={"revoked": False},
            after={"revoked": True},
            request_id=ctx.request_id,
        )
    return key
