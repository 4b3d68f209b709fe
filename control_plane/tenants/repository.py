"""SQL for tenants."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from control_plane.db.models import Alias, ApiKey, Model, ModelVersion, Tenant
from control_plane.db.session import sqlite_write_lock
from control_plane.paging import Page, keyset
from control_plane.tenants.exceptions import TenantNotFound


def get_by_name(session: Session, name: str) -> Tenant | None:
    """The live tenant called `name`."""
    return session.scalar(select(Tenant).where(Tenant.name == name, Tenant.deleted_at.is_(None)))


def list_all(session: Session, *, only_id: int | None = None, page: Page[str] | None = None) -> list[Tenant]:
    """Live tenants by name, or just the one with `only_id`; with `page`, its rows (one more, see paging)."""
    stmt = select(Tenant).where(Tenant.deleted_at.is_(None))
    if only_id is not None:
        stmt = stmt.where(Tenant.id == only_id)
    return list(session.scalars(keyset(stmt, page, Tenant.name)))


def named(session: Session, name: str) -> Tenant | None:
    """The tenant row holding `name`, live or deleted (a deleted tenant keeps its name)."""
    return session.scalar(select(Tenant).where(Tenant.name == name))


def lock(session: Session, tenant: Tenant) -> None:
    """Serialize the changes that count against the tenant's quotas (an upload takes it after its model's
    lock; nothing takes a model's lock while holding it); `tenant` is read afresh, its quotas included.
    On SQLite, which ignores row locks, the database's write lock (`sqlite_write_lock`): what is counted
    after it is current, and concurrent checks go one at a time."""
    sqlite_write_lock(session, Tenant, tenant.id)
    fresh = session.get(Tenant, tenant.id, with_for_update={"key_share": True}, populate_existing=True)
    if fresh is None or fresh.deleted_at is not None:  # deleted meanwhile
        raise TenantNotFound(tenant.name)


def lock_to_delete(session: Session, tenant: Tenant) -> bool:
    """Lock the tenant's row against everything referencing it (`FOR UPDATE`: an insert of a model or a
    key waits for it, in its foreign key's check) and read it afresh; whether it is still live. On SQLite
    the caller holds the write lock already (`sqlite_write_lock`)."""
    stmt = (
        select(Tenant)
        .where(Tenant.id == tenant.id, Tenant.deleted_at.is_(None))
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalar(stmt) is not None


def is_live(session: Session, tenant: Tenant) -> bool:
    """Whether the tenant is not deleted, read now. Right after an insert referencing it: a deletion under
    way has either finished (and this sees it) or will wait for this transaction (and see what it added)."""
    return session.scalar(select(Tenant.deleted_at).where(Tenant.id == tenant.id)) is None


def counts(session: Session, tenant_ids: list[int]) -> dict[int, tuple[int, int, int, int, int]]:
    """Tenant id -> (live models, live versions, bytes of the distinct artifacts live versions use,
    aliases of live models, live API keys: neither revoked nor expired), for the tenants holding any
    (four queries, whatever the number of tenants)."""
    if not tenant_ids:
        return {}
    models = {
        tenant_id: int(count)
        for tenant_id, count in session.execute(
            select(Model.tenant_id, func.count())
            .where(Model.tenant_id.in_(tenant_ids), Model.deleted_at.is_(None))
            .group_by(Model.tenant_id)
        )
    }
    live = (
        select(Model.tenant_id, ModelVersion.sha256, ModelVersion.size_bytes)
        .join(Model, ModelVersion.model_id == Model.id)
        .where(Model.tenant_id.in_(tenant_ids), Model.deleted_at.is_(None), ModelVersion.state != "retired")
        .subquery()
    )
    artifacts = (  # one row per distinct artifact: how many versions use it, and its size
        select(live.c.tenant_id, func.count().label("uses"), func.max(live.c.size_bytes).label("size"))
        .group_by(live.c.tenant_id, live.c.sha256)
        .subquery()
    )
    versions = {
        tenant_id: (int(uses), int(size))
        for tenant_id, uses, size in session.execute(
            select(artifacts.c.tenant_id, func.sum(artifacts.c.uses), func.sum(artifacts.c.size)).group_by(
                artifacts.c.tenant_id
            )
        )
    }
    aliases = {
        tenant_id: int(count)
        for tenant_id, count in session.execute(
            select(Model.tenant_id, func.count())
            .join(Alias, Alias.model_id == Model.id)
            .where(Model.tenant_id.in_(tenant_ids), Model.deleted_at.is_(None))
            .group_by(Model.tenant_id)
        )
    }
    keys = {
        tenant_id: int(count)
        for tenant_id, count in session.execute(
            select(ApiKey.tenant_id, func.count())
            .where(ApiKey.tenant_id.in_(tenant_ids), *live_key())
            .group_by(ApiKey.tenant_id)
        )
        if tenant_id is not None
    }
    held = models.keys() | versions.keys() | aliases.keys() | keys.keys()
    return {
        tenant_id: (
            models.get(tenant_id, 0),
            *versions.get(tenant_id, (0, 0)),
            aliases.get(tenant_id, 0),
            keys.get(tenant_id, 0),
        )
        for tenant_id in held
    }


def live_key() -> tuple[ColumnElement[bool], ...]:
    """Where-clauses of a key that is neither revoked nor expired (now)."""
    expiry = ApiKey.expires_at
    return (ApiKey.revoked_at.is_(None), or_(expiry.is_(None), expiry > datetime.now(UTC)))


def holds_artifact(session: Session, tenant_id: int, sha256: str) -> bool:
    """Whether a live version of the tenant uses the artifact `sha256` already (it costs no more bytes)."""
    found = session.scalar(
        select(ModelVersion.id)
        .join(Model, ModelVersion.model_id == Model.id)
        .where(
            Model.tenant_id == tenant_id,
            Model.deleted_at.is_(None),
            ModelVersion.sha256 == sha256,
            ModelVersion.state != "retired",
        )
        .limit(1)
    )
    return found is not None
