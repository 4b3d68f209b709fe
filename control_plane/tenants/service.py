"""Create, look up and describe tenants (hiding other tenants from tenant-bound keys); set their quotas."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db.models import Tenant
from control_plane.names import is_valid_name
from control_plane.paging import Listing, Page, cut
from control_plane.settings import Settings
from control_plane.tenants import quota, repository
from control_plane.tenants.exceptions import TenantExists, TenantNotFound
from control_plane.tenants.schemas import QuotaOut, QuotaPatch, TenantOut, UsageOut


def create(session: Session, *, ctx: RequestContext, name: str) -> Tenant:
    """Create a tenant (admins only; checked by the router)."""
    if repository.exists_named(session, name):
        raise TenantExists(name)
    tenant = Tenant(name=name)
    session.add(tenant)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="tenant.create",
        target=f"tenant/{name}",
        tenant=name,
        after={"name": name},
        request_id=ctx.request_id,
    )
    return tenant


def visible(session: Session, *, ctx: RequestContext, name: str) -> Tenant:
    """The tenant called `name` if the caller may see it; 404 otherwise, whether it exists or not."""
    if not is_valid_name(name):
        raise TenantNotFound(name)
    tenant = repository.get_by_name(session, name)
    principal = ctx.principal
    if tenant is None or (not principal.is_admin and principal.tenant_id != tenant.id):
        raise TenantNotFound(name)
    return tenant


def list_visible(session: Session, *, ctx: RequestContext, page: Page[str] | None = None) -> list[Tenant]:
    """All tenants for admins, the own tenant for everyone else (with `page`: its rows, see paging)."""
    principal = ctx.principal
    return repository.list_all(
        session, only_id=None if principal.is_admin else principal.tenant_id, page=page
    )


def page_visible(session: Session, *, ctx: RequestContext, page: Page[str]) -> Listing[Tenant]:
    """One page of `list_visible`."""
    return cut(list_visible(session, ctx=ctx, page=page), page, key=lambda t: t.name)


def describe_many(session: Session, tenants: list[Tenant], *, settings: Settings) -> list[TenantOut]:
    """Each tenant with its quotas in force and what it holds (two queries for any number)."""
    held = quota.usage_of(session, [t.id for t in tenants])
    return [
        TenantOut(
            name=t.name,
            created_at=t.created_at,
            quota=QuotaOut(**asdict(quota.limits(t, settings))),
            usage=UsageOut(**asdict(held[t.id])),
        )
        for t in tenants
    ]


def describe(session: Session, tenant: Tenant, *, settings: Settings) -> TenantOut:
    """One tenant, as `describe_many` gives it."""
    return describe_many(session, [tenant], settings=settings)[0]


def set_quota(session: Session, *, ctx: RequestContext, tenant: Tenant, patch: QuotaPatch) -> Tenant:
    """Set the tenant's own quotas given in `patch` (null: back to the default), audited (admins only;
    checked by the router). A limit below what the tenant holds refuses new models or versions and
    removes nothing."""
    repository.lock(session, tenant)
    given = patch.model_dump(include=patch.model_fields_set)
    before = {name: getattr(tenant, name) for name in given}
    for name, value in given.items():
        setattr(tenant, name, value)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="tenant.quota",
        target=f"tenant/{tenant.name}",
        tenant=tenant.name,
        before=before,
        after=given,
        request_id=ctx.request_id,
    )
    return tenant
