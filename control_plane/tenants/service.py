"""Create, look up and describe tenants (hiding other tenants from tenant-bound keys); set their quotas and
inference limits."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db.models import Tenant
from control_plane.db.session import sqlite_write_lock
from control_plane.keys import service as keys_service
from control_plane.names import is_valid_name
from control_plane.paging import Listing, Page, cut
from control_plane.registry import repository as registry_repository
from control_plane.registry import service as registry_service
from control_plane.settings import Settings
from control_plane.state import AppState
from control_plane.tenants import quota, repository
from control_plane.tenants.exceptions import TenantExists, TenantNotFound
from control_plane.tenants.schemas import (
    LimitsOut,
    LimitsPatch,
    QuotaOut,
    QuotaPatch,
    TenantOut,
    UsageOut,
)


def create(session: Session, *, ctx: RequestContext, name: str) -> Tenant:
    """Create a tenant (admins only; checked by the router)."""
    held = repository.named(session, name)
    if held is not None:
        raise TenantExists(name, deleted=held.deleted_at is not None)
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


def delete(session: Session, *, ctx: RequestContext, state: AppState, tenant: Tenant) -> None:
    """Offboard a tenant (admins only; checked by the router), in one transaction: each live model is
    deleted as `DELETE .../models/{m}` does (its versions retired and unloaded after commit, its
    artifacts released, each audited `model.delete`), each unrevoked key revoked (`key.revoke`), and the
    tenant marked deleted (`tenant.delete`, with what it held). Its requests get 401 and 404 from then on,
    on every replica; its audit trail stays, and its name is not given to another tenant.

    Locks: the models first, in id order, as every change of one model takes its lock before the tenant's;
    then the tenant's row, which holds back inserts of models and keys referencing it until the commit
    (they then find it deleted, `registry.service.create`, `keys.service.create`); then the models again,
    for any committed before that lock. On SQLite, the write lock first: deletes go one at a time."""
    sqlite_write_lock(session, Tenant, tenant.id)
    registry_repository.lock_live_models(session, tenant_id=tenant.id)
    if not repository.lock_to_delete(session, tenant):
        raise TenantNotFound(tenant.name)  # deleted meanwhile
    models = registry_repository.lock_live_models(session, tenant_id=tenant.id)
    for model in models:
        registry_service.mark_deleted(session, ctx=ctx, state=state, tenant=tenant, model=model)
    revoked = keys_service.revoke_all(session, ctx=ctx, tenant=tenant)
    tenant.deleted_at = datetime.now(UTC)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="tenant.delete",
        target=f"tenant/{tenant.name}",
        tenant=tenant.name,
        before={"models": sorted(m.name for m in models), "keys": revoked},
        after={"deleted": True},
        request_id=ctx.request_id,
    )


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
            limits=inference_limits(t, settings),
            usage=UsageOut(**asdict(held[t.id])),
        )
        for t in tenants
    ]


def describe(session: Session, tenant: Tenant, *, settings: Settings) -> TenantOut:
    """One tenant, as `describe_many` gives it."""
    return describe_many(session, [tenant], settings=settings)[0]


def set_quota(session: Session, *, ctx: RequestContext, tenant: Tenant, patch: QuotaPatch) -> Tenant:
    """Set the tenant's own quotas given in `patch` (null: back to the default), audited (admins only;
    checked by the router). A limit below what the tenant holds refuses new ones and removes nothing."""
    given = patch.model_dump(include=patch.model_fields_set)
    return _set_own(session, ctx=ctx, tenant=tenant, action="tenant.quota", given=given, columns={})


# A tenant's own inference limits: the API's fields and the columns that hold them.
_LIMIT_COLUMNS = {
    "rate_per_s": "inference_rate_limit",
    "burst": "inference_burst",
    "max_concurrency": "inference_max_concurrency",
}


def inference_limits(tenant: Tenant, settings: Settings) -> LimitsOut:
    """The tenant's inference limits in force: its own, else the settings' (null: unlimited)."""
    rate = tenant.inference_rate_limit
    burst = tenant.inference_burst
    most = tenant.inference_max_concurrency
    rate = settings.tenant_rate_limit if rate is None else rate
    most = settings.tenant_max_concurrency if most is None else most
    return LimitsOut(
        rate_per_s=rate or None,
        burst=max(settings.tenant_burst if burst is None else burst, 1),
        max_concurrency=most or None,
    )


def set_limits(session: Session, *, ctx: RequestContext, tenant: Tenant, patch: LimitsPatch) -> Tenant:
    """Set the tenant's own inference limits given in `patch` (null: back to the default), audited (admins
    only; checked by the router). Every replica applies them with its next routing table."""
    given = patch.model_dump(include=patch.model_fields_set)
    return _set_own(
        session, ctx=ctx, tenant=tenant, action="tenant.limits", given=given, columns=_LIMIT_COLUMNS
    )


def _set_own(
    session: Session,
    *,
    ctx: RequestContext,
    tenant: Tenant,
    action: str,
    given: dict[str, object],
    columns: dict[str, str],
) -> Tenant:
    """Set the tenant's settings in `given` (by API field; `columns` names the column of a field whose
    column is named otherwise), under the tenant's lock, audited as `action` with before and after."""
    repository.lock(session, tenant)
    before = {name: getattr(tenant, columns.get(name, name)) for name in given}
    if before == given:
        return tenant  # nothing changes, nothing to audit
    for name, value in given.items():
        setattr(tenant, columns.get(name, name), value)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action=action,
        target=f"tenant/{tenant.name}",
        tenant=tenant.name,
        before=before,
        after=given,
        request_id=ctx.request_id,
    )
    return tenant
