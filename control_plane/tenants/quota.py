"""Tenant quotas: the most live models, live versions, artifact bytes, aliases and live API keys a tenant
may hold, so that one tenant cannot fill the registry, the artifact store or the routing table (every
replica holds every alias in memory and rebuilds it on changes) that every tenant shares.

A tenant's own limit (set by admins, PATCH /v1/tenants/{t}) wins; without one, the settings' default
(`CP_TENANT_MAX_*`; 0: unlimited). Artifact bytes are those of the distinct artifacts the tenant's live
versions use: a redeploy, or the same bytes uploaded again, costs a version and no bytes. A limit set
below what the tenant holds refuses new ones and removes nothing. Aliases count those of live models (a
move of an alias is not a new one; a deleted alias frees its place); keys count those neither revoked nor
expired (admin keys belong to no tenant).

A check that may refuse locks the tenant's row, so concurrent creates and uploads of one tenant cannot
together pass a limit; with no limit to check, nothing is locked. An upload takes it after its model's
lock (nothing takes a model's lock while holding the tenant's), so a model held long holds up no other.
A refusal is no security denial: it is not audited as one (`audit.denials` audits 401s and 403s of
`Unauthorized` and `Forbidden`), and a tenant retrying against its quota cannot crowd those out.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from control_plane.db.models import Tenant
from control_plane.errors import AppError
from control_plane.settings import Settings
from control_plane.tenants import repository


class QuotaExceeded(AppError):
    """A model, version, alias or key the tenant's quota has no room for."""

    status_code = 403
    kind = "QuotaExceeded"


@dataclass(frozen=True, slots=True)
class Usage:
    """What a tenant holds."""

    models: int = 0
    versions: int = 0
    artifact_bytes: int = 0
    aliases: int = 0
    keys: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's effective quotas (None: unlimited)."""

    max_models: int | None
    max_versions: int | None
    max_artifact_bytes: int | None
    max_aliases: int | None
    max_keys: int | None


def limits(tenant: Tenant, settings: Settings) -> Limits:
    """The tenant's own limits, else the settings' defaults."""

    def pick(own: int | None, default: int) -> int | None:
        return own if own is not None else (default or None)

    return Limits(
        max_models=pick(tenant.max_models, settings.tenant_max_models),
        max_versions=pick(tenant.max_versions, settings.tenant_max_versions),
        max_artifact_bytes=pick(tenant.max_artifact_bytes, settings.tenant_max_artifact_bytes),
        max_aliases=pick(tenant.max_aliases, settings.tenant_max_aliases),
        max_keys=pick(tenant.max_keys, settings.tenant_max_keys),
    )


def usage_of(session: Session, tenant_ids: list[int]) -> dict[int, Usage]:
    """Tenant id -> what it holds, for each of `tenant_ids` (four queries for any number)."""
    found = repository.counts(session, tenant_ids)
    return {tenant_id: Usage(*found.get(tenant_id, (0, 0, 0, 0, 0))) for tenant_id in tenant_ids}


def check_model(session: Session, *, tenant: Tenant, settings: Settings) -> None:
    """Refuse a new model the tenant's quota has no room for (locks the tenant when it has one)."""
    _check_count(session, tenant=tenant, settings=settings, field="models", advice="delete a model")


def check_alias(session: Session, *, tenant: Tenant, settings: Settings, lock: bool = True) -> None:
    """Refuse a new alias the tenant's quota has no room for (with `lock`, the tenant is locked first when
    it has a limit: the final check, in the transaction that creates the alias; without, an early refusal
    that holds nothing, before a promote loads its version)."""
    _check_count(
        session, tenant=tenant, settings=settings, field="aliases", advice="delete an alias", lock=lock
    )


def check_key(session: Session, *, tenant: Tenant, settings: Settings) -> None:
    """Refuse a new API key of the tenant its quota has no room for (locks the tenant when it has one)."""
    _check_count(session, tenant=tenant, settings=settings, field="keys", advice="revoke a key")


def _check_count(
    session: Session, *, tenant: Tenant, settings: Settings, field: str, advice: str, lock: bool = True
) -> None:
    quota = f"max_{field}"
    if getattr(limits(tenant, settings), quota) is None:
        return
    if lock:
        repository.lock(session, tenant)
    most = getattr(limits(tenant, settings), quota)  # read afresh under the lock
    used = getattr(usage_of(session, [tenant.id])[tenant.id], field)
    if most is not None and used >= most:
        noun = {"models": "models", "aliases": "aliases", "keys": "live API keys"}[field]
        raise QuotaExceeded(
            f"tenant '{tenant.name}' has {used} {noun} and its quota allows {most} ({quota}): "
            f"{advice}, or ask an admin to raise the quota"
        )


def check_version(
    session: Session,
    *,
    tenant: Tenant,
    settings: Settings,
    sha256: str | None,
    size_bytes: int = 0,
    lock: bool = True,
) -> None:
    """Refuse a new version of the artifact `sha256` (`size_bytes` long) that the tenant's quota has no
    room for. With `sha256` None (the bytes not yet known), refuse only what no bytes could fit. With
    `lock`, the tenant is locked first when it has a limit: the final check, in the transaction that
    registers the version. Without, an early refusal that holds nothing."""
    first = limits(tenant, settings)
    if first.max_versions is None and first.max_artifact_bytes is None:
        return
    if lock:
        repository.lock(session, tenant)
    bound, used = limits(tenant, settings), usage_of(session, [tenant.id])[tenant.id]
    advice = "delete versions it no longer needs, or ask an admin to raise the quota"
    if bound.max_versions is not None and used.versions >= bound.max_versions:
        raise QuotaExceeded(
            f"tenant '{tenant.name}' has {used.versions} live versions and its quota allows "
            f"{bound.max_versions} (max_versions): {advice}"
        )
    most = bound.max_artifact_bytes
    if most is None:
        return
    held = (
        f"tenant '{tenant.name}' holds {used.artifact_bytes} bytes of artifacts and its quota allows {most}"
    )
    if sha256 is None:  # at its limit the tenant may still upload bytes it holds: refused when over it
        if used.artifact_bytes > most:
            raise QuotaExceeded(f"{held} (max_artifact_bytes): {advice}")
        return
    adds = 0 if repository.holds_artifact(session, tenant.id, sha256) else size_bytes
    if used.artifact_bytes + adds > most:
        raise QuotaExceeded(
            f"{held} (max_artifact_bytes): this artifact of {size_bytes} bytes does not fit; {advice}"
        )
