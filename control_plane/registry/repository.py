"""SQL for models, versions and aliases."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Alias,
    AliasHistory,
    AliasRoute,
    Model,
    ModelVersion,
    Placement,
    RegistryIdentity,
    Tenant,
    TritonInstance,
)
from control_plane.db.session import sqlite_write_lock
from control_plane.paging import Page, keyset
from control_plane.routing.changes import mark_routing_changed


def get_model(session: Session, *, tenant_id: int, name: str, lock: bool = False) -> Model | None:
    """The live model `name` of a tenant, optionally locked for update (and then read afresh: a change
    committed while we waited for the lock is what we see, and a model deleted meanwhile is None)."""
    stmt = select(Model).where(Model.tenant_id == tenant_id, Model.name == name, Model.deleted_at.is_(None))
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalar(stmt)


def lock_model(session: Session, model: Model) -> None:
    """Serialize the changes of one model's aliases, traffic and versions (taken first: model, then
    versions); `model` is read afresh."""
    session.get(Model, model.id, with_for_update={"key_share": True}, populate_existing=True)


def lock_live_models(session: Session, *, tenant_id: int) -> list[Model]:
    """Lock the tenant's live models as `lock_model` does, in id order (one statement), read afresh."""
    stmt = (
        select(Model)
        .where(Model.tenant_id == tenant_id, Model.deleted_at.is_(None))
        .order_by(Model.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(stmt))


def hold_model(session: Session, model: Model) -> bool:
    """Before a change of the model reads what it changes, right after `lock_model` or any load: on SQLite,
    which ignores that lock, the database's write lock (`sqlite_write_lock`), so two moves of one alias
    cannot both read the same previous version. Never before a load (it would stall the loader). Whether
    `model` is still live: on SQLite it is read afresh under that lock (it may have been deleted, its
    tenant with it, since the caller read it: the change would land in a deleted model); on Postgres the
    caller's locked read of it is current already."""
    if sqlite_write_lock(session, Model, model.id):
        session.refresh(model)
    return model.deleted_at is None


def list_models(session: Session, *, tenant_id: int, page: Page[str] | None = None) -> list[Model]:
    """Live models of a tenant, by name (with `page`: its rows, see paging)."""
    stmt = select(Model).where(Model.tenant_id == tenant_id, Model.deleted_at.is_(None))
    return list(session.scalars(keyset(stmt, page, Model.name)))


def model_names(session: Session, *, tenant_ids: list[int]) -> dict[int, list[str]]:
    """The names of the live models of each of these tenants, by name."""
    names: dict[int, list[str]] = {tenant_id: [] for tenant_id in tenant_ids}
    rows = session.execute(
        select(Model.tenant_id, Model.name)
        .where(Model.tenant_id.in_(tenant_ids), Model.deleted_at.is_(None))
        .order_by(Model.name)
    )
    for tenant_id, name in rows:
        names[tenant_id].append(name)
    return names


def next_version_number(session: Session, *, model_id: int) -> int:
    """One more than the highest version ever given to the model (retired ones included)."""
    highest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model_id))
    return (highest or 0) + 1


def get_version(session: Session, *, model_id: int, number: int) -> ModelVersion | None:
    """Version `number` of a model, unless retired."""
    return session.scalar(
        select(ModelVersion).where(
            ModelVersion.model_id == model_id,
            ModelVersion.version == number,
            ModelVersion.state != "retired",
        )
    )


def list_versions(
    session: Session, *, model_id: int, include_retired: bool = False, page: Page[int] | None = None
) -> list[ModelVersion]:
    """A model's versions, oldest first (with `page`: its rows, see paging)."""
    stmt = select(ModelVersion).where(ModelVersion.model_id == model_id)
    if not include_retired:
        stmt = stmt.where(ModelVersion.state != "retired")
    return list(session.scalars(keyset(stmt, page, ModelVersion.version)))


def versions_of_models(session: Session, *, model_ids: list[int]) -> dict[int, list[ModelVersion]]:
    """Model id -> its non-retired versions, oldest first, for many models in one query."""
    found: dict[int, list[ModelVersion]] = {model_id: [] for model_id in model_ids}
    stmt = (
        select(ModelVersion)
        .where(ModelVersion.model_id.in_(model_ids), ModelVersion.state != "retired")
        .order_by(ModelVersion.model_id, ModelVersion.version)
    )
    for version in session.scalars(stmt):
        found[version.model_id].append(version)
    return found


def aliases_of_models(session: Session, *, model_ids: list[int]) -> dict[int, dict[str, int]]:
    """Model id -> alias name -> version number, for many models in one query."""
    found: dict[int, dict[str, int]] = {model_id: {} for model_id in model_ids}
    rows = session.execute(
        select(Alias.model_id, Alias.name, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == Alias.version_id)
        .where(Alias.model_id.in_(model_ids))
        .order_by(Alias.model_id, Alias.name)
    )
    for model_id, name, number in rows:
        found[model_id][name] = number
    return found


def get_alias(session: Session, *, model_id: int, name: str, lock: bool = False) -> Alias | None:
    """One alias of a model, optionally locked for update and then read afresh, as the other locked reads
    are: a copy this session read before the lock (a promote's quota check, a rollback's target) may be
    older than what the lock guards, and a move records the version it replaces from it."""
    stmt = select(Alias).where(Alias.model_id == model_id, Alias.name == name)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return session.scalar(stmt)


def alias_routes(session: Session, *, alias_id: int) -> list[AliasRoute]:
    """An alias' traffic routes (weighted and shadow), in the order they were set."""
    return list(
        session.scalars(select(AliasRoute).where(AliasRoute.alias_id == alias_id).order_by(AliasRoute.id))
    )


def alias_history(session: Session, *, alias_id: int, page: Page[int] | None = None) -> list[AliasHistory]:
    """Every move of an alias, newest first (with `page`: its rows, see paging)."""
    stmt = select(AliasHistory).where(AliasHistory.alias_id == alias_id)
    return list(session.scalars(keyset(stmt, page, AliasHistory.id, newest_first=True)))


def last_move_to(session: Session, *, alias_id: int, version_id: int) -> AliasHistory | None:
    """The alias' latest move onto `version_id` from another version (what a rollback undoes)."""
    return session.scalar(
        select(AliasHistory)
        .where(AliasHistory.alias_id == alias_id, AliasHistory.to_version_id == version_id)
        .where(AliasHistory.from_version_id.is_not(None), AliasHistory.from_version_id != version_id)
        .order_by(AliasHistory.id.desc())
        .limit(1)
    )


def released_before(session: Session, cutoff: datetime) -> list[int]:
    """Ids of `ready` versions released (no alias or route left) and untouched since before `cutoff`."""
    return list(
        session.scalars(
            select(ModelVersion.id).where(
                ModelVersion.state == "ready",
                ModelVersion.released_at.is_not(None),
                ModelVersion.released_at < cutoff,
                ModelVersion.updated_at < cutoff,
            )
        )
    )


def remove_routes(session: Session, *, alias_id: int, kind: str | None = None) -> set[int]:
    """Delete an alias' traffic routes (only those of `kind`: weighted or shadow); the versions they named.
    A Core delete, which the change tracking of `routing.changes` does not see: flagged here, so the
    routing table stops splitting or mirroring at commit, here and on every replica."""
    where = [AliasRoute.alias_id == alias_id, *([AliasRoute.kind == kind] if kind else [])]
    named = set(session.scalars(select(AliasRoute.version_id).where(*where)))
    session.execute(delete(AliasRoute).where(*where))
    mark_routing_changed(session, desired=True)
    return named


def delete_alias(session: Session, *, alias_id: int) -> set[int]:
    """Delete an alias with its traffic routes and history; the versions its routes named. Core deletes,
    flagged as `remove_routes` does: the routing table drops the alias at commit, on every replica."""
    named = remove_routes(session, alias_id=alias_id)
    session.execute(delete(AliasHistory).where(AliasHistory.alias_id == alias_id))
    session.execute(delete(Alias).where(Alias.id == alias_id))
    return named


def aliases_referencing(session: Session, *, version_id: int) -> list[str]:
    """Names of aliases (or traffic routes) that point at a version."""
    direct = select(Alias.name).where(Alias.version_id == version_id)
    routed = (
        select(Alias.name)
        .join(AliasRoute, AliasRoute.alias_id == Alias.id)
        .where(AliasRoute.version_id == version_id)
    )
    return sorted(set(session.scalars(direct)) | set(session.scalars(routed)))


def sha_in_use(session: Session, sha256: str) -> bool:
    """Whether a version that is not retired uses the artifact."""
    stmt = select(ModelVersion.id).where(ModelVersion.sha256 == sha256, ModelVersion.state != "retired")
    return session.scalar(stmt.limit(1)) is not None


def registry_id(session: Session) -> str | None:
    """The registry's random id (written by its migration)."""
    return session.scalar(select(RegistryIdentity.id).limit(1))


def last_version_id(session: Session) -> int:
    """The highest version id committed so far (0: none)."""
    return session.scalar(select(func.max(ModelVersion.id))) or 0


def live_digests(session: Session, *, after: str, limit: int) -> list[str]:
    """The distinct artifacts versions that are not retired use, ascending from after `after`."""
    stmt = (
        select(ModelVersion.sha256)
        .distinct()
        .where(ModelVersion.state != "retired", ModelVersion.sha256 > after)
        .order_by(ModelVersion.sha256)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def digests_registered_after(session: Session, *, digests: list[str], version_id: int) -> list[str]:
    """Those of `digests` that a version with an id above `version_id` uses."""
    stmt = (
        select(ModelVersion.sha256)
        .distinct()
        .where(ModelVersion.sha256.in_(digests), ModelVersion.id > version_id)
    )
    return list(session.scalars(stmt))


def live_versions_of(session: Session, *, digests: list[str], limit: int) -> list[tuple[str, str, int, str]]:
    """(tenant, model, version, sha256) of versions that are not retired using one of `digests`."""
    stmt = (
        select(Tenant.name, Model.name, ModelVersion.version, ModelVersion.sha256)
        .join(Model, Model.id == ModelVersion.model_id)
        .join(Tenant, Tenant.id == Model.tenant_id)
        .where(ModelVersion.sha256.in_(digests), ModelVersion.state != "retired")
        .order_by(Tenant.name, Model.name, ModelVersion.version)
        .limit(limit)
    )
    return [(tenant, model, version, sha256) for tenant, model, version, sha256 in session.execute(stmt)]


def resident_on(session: Session, *, version_id: int) -> list[str]:
    """Names of the instances a version is observed ready on."""
    query = (
        select(TritonInstance.name)
        .join(Placement, Placement.instance_id == TritonInstance.id)
        .where(Placement.version_id == version_id, Placement.state == "ready")
        .order_by(TritonInstance.name)
    )
    return list(session.scalars(query))
