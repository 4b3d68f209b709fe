"""Create, verify, list and revoke API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.principal import Principal, Role
from control_plane.db.models import ApiKey, Tenant
from control_plane.errors import InvalidRequest, NotFound, Unauthorized
from control_plane.keys import repository, secrets
from control_plane.paging import Listing, Page, cut
from control_plane.settings import Settings
from control_plane.tenants import quota
from control_plane.tenants import repository as tenant_repository
from control_plane.tenants.exceptions import TenantNotFound
from control_plane.timestamps import as_utc, format_utc

if TYPE_CHECKING:  # auth.context imports this module
    from control_plane.auth.context import RequestContext


MAX_LIFE = timedelta(days=100 * 365)


class KeyExpired(Unauthorized):
    """The key is right, and expired: its holder is told so (they hold the secret)."""

    def __init__(self, expires_at: datetime):
        super().__init__(expired_message(expires_at))


def expired_message(expires_at: datetime) -> str:
    """What the holder of an expired key is told (management API, console and data plane alike)."""
    return f"API key expired at {format_utc(expires_at)}; ask an admin for a new one"


def verify(session: Session, token: str) -> Principal | None:
    """The principal of a valid, unrevoked key; None for anything else; KeyExpired for an expired one."""
    prefix = secrets.prefix_of(token)
    if prefix is None:
        return None
    key = repository.by_prefix(session, prefix)
    if key is None:
        return None
    if key.revoked_at is not None or not secrets.matches(token, key.key_hash):
        return None
    if key.expires_at is not None and as_utc(key.expires_at) <= datetime.now(UTC):
        raise KeyExpired(key.expires_at)
    return Principal(
        role=Role(key.role),
        tenant_id=key.tenant_id,
        key_id=key.id,
        label=label_of(key),
        expires_at=as_utc(key.expires_at) if key.expires_at is not None else None,
    )


def label_of(key: ApiKey) -> str:
    """How the audit log names a key's holder: `admin-key:<prefix>` or `key:<prefix>` (a tenant's)."""
    return f"admin-key:{key.prefix}" if key.role == Role.ADMIN.value else f"key:{key.prefix}"


def expiry(
    expires_at: datetime | None,
    *,
    max_ttl_s: float,
    now: datetime,
    creator_expires_at: datetime | None = None,
) -> datetime | None:
    """When a new key expires: as asked (in the future, within `max_ttl_s` when that is set, and not after
    the key that creates it, which a leaked short-lived key could otherwise outlive), or at the longest
    allowed when not asked (never, without a `max_ttl_s` or an expiring creator)."""
    latest: datetime | None = None
    why = ""
    if max_ttl_s > 0:
        latest = now + timedelta(seconds=max_ttl_s)
        why = f"the longest a key may live here (CP_KEY_MAX_TTL_S = {max_ttl_s:g} s)"
    if creator_expires_at is not None and (latest is None or as_utc(creator_expires_at) < latest):
        latest, why = as_utc(creator_expires_at), "when the key that creates it expires"
    if expires_at is None:
        return latest
    if expires_at <= now:
        raise InvalidRequest(f"expires_at {format_utc(expires_at)} is not in the future")
    if expires_at > now + MAX_LIFE:
        raise InvalidRequest(
            f"expires_at {format_utc(expires_at)} is more than 100 years away: leave it out for a key that "
            "does not expire"
        )
    if latest is not None and expires_at > latest:
        raise InvalidRequest(f"expires_at {format_utc(expires_at)} is after {why}: {format_utc(latest)}")
    return expires_at


def issue(
    session: Session,
    *,
    ctx: RequestContext,
    settings: Settings,
    tenant: Tenant | None,
    role: Role,
    description: str | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """`create`, expiring when asked, else at the longest life the settings allow, and never after the
    creator's own key (see `expiry`); a tenant's key only if its quota of live keys has room."""
    given = expiry(
        expires_at,
        max_ttl_s=settings.key_max_ttl_s,
        now=datetime.now(UTC),
        creator_expires_at=ctx.principal.expires_at,
    )
    if tenant is not None:  # after the request's own checks: a bad expiry is 422 whatever the quota
        quota.check_key(session, tenant=tenant, settings=settings)
    return create(session, ctx=ctx, tenant=tenant, role=role, description=description, expires_at=given)


def create(
    session: Session,
    *,
    ctx: RequestContext,
    tenant: Tenant | None,
    role: Role,
    description: str | None,
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key bound to `tenant` (None: an admin key, bound to none); the plaintext is returned once and
    never stored."""
    if (tenant is None) != (role is Role.ADMIN):
        raise ValueError("admin keys, and only they, are bound to no tenant")
    new = secrets.generate()
    key = ApiKey(
        tenant_id=tenant.id if tenant is not None else None,
        role=role.value,
        prefix=new.prefix,
        key_hash=new.key_hash,
        description=description,
        expires_at=expires_at,
    )
    session.add(key)
    session.flush()
    if tenant is not None and not tenant_repository.is_live(session, tenant):  # deleted while this ran
        raise TenantNotFound(tenant.name)
    audit.record(
        session,
        actor=ctx.principal,
        action="key.create",
        target=f"key/{key.prefix}",
        tenant=tenant.name if tenant is not None else None,
        after={
            "id": key.id,
            "role": key.role,
            "prefix": key.prefix,
            "expires_at": expires_at.isoformat() if expires_at is not None else None,
        },
        request_id=ctx.request_id,
    )
    return key, new.plaintext


def page_for(session: Session, *, tenant: Tenant | None, page: Page[int]) -> Listing[ApiKey]:
    """A page of the tenant's keys (None: the admin keys), oldest first (never their secrets)."""
    owner = tenant.id if tenant is not None else None
    return cut(repository.for_tenant(session, owner, page=page), page, key=lambda k: k.id)


def get(session: Session, *, tenant: Tenant | None, key_id: int, lock: bool = False) -> ApiKey:
    """A key of the tenant (None: an admin key), or 404 (another tenant's keys included)."""
    owner = tenant.id if tenant is not None else None
    key = repository.get(session, tenant_id=owner, key_id=key_id, lock=lock)
    if key is None:
        raise NotFound(f"key {key_id} not found")
    return key


def revoke(session: Session, *, ctx: RequestContext, tenant: Tenant | None, key_id: int) -> ApiKey:
    """Revoke a key of the tenant (None: an admin key); revoking twice is harmless (and audited once,
    however close the two are)."""
    key = get(session, tenant=tenant, key_id=key_id, lock=True)
    if key.revoked_at is None:
        revoke_locked(session, ctx=ctx, tenant=tenant, key=key)
    return key


def revoke_all(session: Session, *, ctx: RequestContext, tenant: Tenant) -> list[str]:
    """Revoke every key of the tenant not revoked yet (expired ones too), each audited as `revoke` does;
    their prefixes, oldest first."""
    keys = repository.unrevoked(session, tenant_id=tenant.id)
    for key in keys:
        revoke_locked(session, ctx=ctx, tenant=tenant, key=key)
    return [key.prefix for key in keys]


def revoke_locked(session: Session, *, ctx: RequestContext, tenant: Tenant | None, key: ApiKey) -> None:
    """Revoke an unrevoked key, locked and read afresh by the caller, audited as `key.revoke`."""
    key.revoked_at = datetime.now(UTC)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="key.revoke",
        target=f"key/{key.prefix}",
        tenant=tenant.name if tenant is not None else None,
        before={"revoked": False},
        after={"revoked": True},
        request_id=ctx.request_id,
    )
