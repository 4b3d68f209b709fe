"""An immutable snapshot of everything the hot path needs to route a request."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from control_plane.dataplane.contract import Contract
from control_plane.dataplane.limits import OwnLimits
from control_plane.dataplane.rewrite import hide_internal_name
from control_plane.db.models import (
    Alias,
    AliasRoute,
    ApiKey,
    Model,
    ModelVersion,
    Placement,
    Tenant,
    TritonInstance,
)
from control_plane.routing.contracts import UNCHECKABLE, contract_from_config
from control_plane.timestamps import as_utc

# What the loader and Triton put before the reason itself, naming the model twice and Triton's own
# version folder (always 1 here, whatever version the caller asked for).
_LOAD_PREFIXES = re.compile(
    r"^(?:Triton could not load '[^']*': )?(?:load failed for model '[^']*': version \d+ is at \w+ state: )?"
)


def public_reason(message: str, triton_name: str, shown: str) -> str:
    """Why a load failed, for the model's callers: Triton's message as `hide_internal_name` shows it
    (no traceback, addresses or folders; `shown` for the name Triton knows the version by), without
    the prefixes that name the model again (`_LOAD_PREFIXES`), on one line."""
    head = _LOAD_PREFIXES.sub("", hide_internal_name(message, triton_name=triton_name, model=shown))
    return " ".join(head.split())[:500]


@lru_cache(maxsize=1024)  # asked on every request to such a version: its rewrite is done once
def load_failed_message(number: int, model: str | None, failure: str | None, triton_name: str) -> str:
    """What requests to a version whose load failed are told (the router's answer and a waiting request's
    alike): which version, in the caller's terms, and why (`public_reason`)."""
    why = f": {public_reason(failure, triton_name, model or 'the model')}" if failure else ""
    which = f"model '{model}'" if model else "the model"
    return f"version {number} of {which} is not ready: its load failed{why}"


# Versions a request may go to: ready, or loaded on demand first (residency, issue 12). Routing treats
# these states alike, so a version moving between them does not rebuild the table (`routing.changes`).
SERVABLE = frozenset({"ready", "registered", "unloaded", "loading"})


@dataclass(frozen=True, slots=True)
class VersionTarget:
    """One version as Triton knows it (`state` as of the last rebuild: within SERVABLE it may lag)."""

    version: int
    triton_name: str
    state: str
    contract: Contract = UNCHECKABLE  # what its requests must look like
    failure: str | None = None  # why its load failed (state `failed`), as Triton said (`public_reason`)


@dataclass(frozen=True, slots=True)
class AliasTarget:
    """Where an alias sends traffic: one version, or a weighted split, plus an optional shadow."""

    version: int
    weighted: tuple[tuple[int, int], ...] = ()  # (version, weight) when a canary split is set
    shadow: tuple[int, int] | None = None  # (version, percent)


@dataclass(frozen=True, slots=True)
class ModelTarget:
    """A live model of a tenant with its versions and aliases."""

    tenant: str
    name: str
    model_id: int
    versions: dict[int, VersionTarget] = field(default_factory=dict)
    aliases: dict[str, AliasTarget] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """An API key as the hot path checks it: hash, role, tenant."""

    key_id: int
    key_hash: str
    role: str
    tenant_id: int | None
    prefix: str
    expires_at: float | None = None  # epoch seconds; None: never


@dataclass(frozen=True, slots=True)
class RoutingTable:
    """(tenant id, model name) -> ModelTarget, tenant names by id, unrevoked keys by prefix, and the
    instances each Triton model is ready on (none known: any instance)."""

    models: dict[tuple[int, str], ModelTarget]
    tenants: dict[int, str]
    tenant_ids: dict[str, int]
    keys: dict[str, KeyEntry]
    placements: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Triton model names observed ready on some instance, reachable or not (residency, issue 12).
    resident: frozenset[str] = frozenset()
    # The inference limits of tenants that have their own (PATCH /v1/tenants/{t}).
    tenant_limits: dict[int, OwnLimits] = field(default_factory=dict)


EMPTY_TABLE = RoutingTable(models={}, tenants={}, tenant_ids={}, keys={})


def build_table(session: Session) -> RoutingTable:
    """Read the live registry in a handful of queries."""
    # Columns rather than ORM objects: a rebuild reads every live model and version (JSON columns and
    # all, when loaded as objects), and runs on every change that is not only placements'.
    live_tenants = select(
        Tenant.id,
        Tenant.name,
        Tenant.inference_rate_limit,
        Tenant.inference_burst,
        Tenant.inference_max_concurrency,
    ).where(Tenant.deleted_at.is_(None))
    tenants: dict[int, str] = {}
    own_limits: dict[int, OwnLimits] = {}
    for tenant_id, tenant_name, rate, burst, most in session.execute(live_tenants).tuples():
        tenants[tenant_id] = tenant_name
        if (rate, burst, most) != (None, None, None):
            own_limits[tenant_id] = OwnLimits(rate_per_s=rate, burst=burst, max_concurrency=most)
    models = {
        model_id: (tenant_id, name)
        for model_id, tenant_id, name in session.execute(
            select(Model.id, Model.tenant_id, Model.name).where(Model.deleted_at.is_(None))
        ).tuples()
        if tenant_id in tenants
    }
    versions: dict[int, dict[int, VersionTarget]] = {model_id: {} for model_id in models}
    by_id: dict[int, VersionTarget] = {}
    rows = session.execute(
        select(
            ModelVersion.id,
            ModelVersion.model_id,
            ModelVersion.version,
            ModelVersion.triton_name,
            ModelVersion.state,
            ModelVersion.config_text,
            ModelVersion.state_message,
        ).where(ModelVersion.state != "retired")
    ).tuples()
    for version_id, model_id, number, triton_name, state, config_text, message in rows:
        if model_id in models:
            target = VersionTarget(
                version=number,
                triton_name=triton_name,
                state=state,
                contract=contract_from_config(config_text),
                failure=message if state == "failed" and message else None,
            )
            versions[model_id][number] = target
            by_id[version_id] = target
    routes: dict[int, list[AliasRoute]] = {}
    for route in session.scalars(select(AliasRoute)):
        routes.setdefault(route.alias_id, []).append(route)
    aliases: dict[int, dict[str, AliasTarget]] = {model_id: {} for model_id in models}
    for alias in session.scalars(select(Alias)):
        if alias.model_id in models and alias.version_id in by_id:
            aliases[alias.model_id][alias.name] = _alias_target(by_id, alias, routes.get(alias.id, []))
    table = {
        (tenant_id, name): ModelTarget(
            tenant=tenants[tenant_id],
            name=name,
            model_id=model_id,
            versions=versions[model_id],
            aliases=aliases[model_id],
        )
        for model_id, (tenant_id, name) in models.items()
    }
    keys = {
        k.prefix: KeyEntry(
            key_id=k.id,
            key_hash=k.key_hash,
            role=k.role,
            tenant_id=k.tenant_id,
            prefix=k.prefix,
            expires_at=_epoch(k.expires_at),
        )
        for k in session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
        if k.tenant_id is None or k.tenant_id in tenants
    }
    return RoutingTable(
        models=table,
        tenants=tenants,
        tenant_ids={n: i for i, n in tenants.items()},
        keys=keys,
        placements=ready_placements(session),
        resident=resident_names(session),
        tenant_limits=own_limits,
    )


def _epoch(moment: datetime | None) -> float | None:
    """Epoch seconds of a stored time (SQLite's come back naive, in UTC)."""
    if moment is None:
        return None
    return as_utc(moment).timestamp()


def resident_names(session: Session) -> frozenset[str]:
    """Triton model names with a placement observed ready (on any instance, reachable or not)."""
    rows = session.execute(
        select(ModelVersion.triton_name)
        .join(Placement, Placement.version_id == ModelVersion.id)
        .where(Placement.state == "ready")
        .distinct()
    )
    return frozenset(rows.scalars())


def ready_placements(session: Session) -> dict[str, tuple[str, ...]]:
    """Triton model name -> the instances it was last seen ready on, skipping unavailable instances;
    draining ones only when no other has it."""
    rows = session.execute(
        select(ModelVersion.triton_name, TritonInstance.name, TritonInstance.draining_since)
        .join(Placement, Placement.version_id == ModelVersion.id)
        .join(TritonInstance, TritonInstance.id == Placement.instance_id)
        .where(Placement.state == "ready", TritonInstance.state != "unavailable")
        .order_by(TritonInstance.name)
    ).tuples()
    serving: dict[str, list[str]] = {}
    draining: dict[str, list[str]] = {}
    for triton_name, instance, draining_since in rows:
        (serving if draining_since is None else draining).setdefault(triton_name, []).append(instance)
    for triton_name, instances in draining.items():
        serving.setdefault(triton_name, instances)
    return {name: tuple(instances) for name, instances in serving.items()}


def _alias_target(by_id: dict[int, VersionTarget], alias: Alias, routes: list[AliasRoute]) -> AliasTarget:
    weighted = tuple(
        (by_id[r.version_id].version, r.weight)
        for r in routes
        if r.kind == "weighted" and r.version_id in by_id
    )
    shadow = next(
        (
            (by_id[r.version_id].version, r.weight)
            for r in routes
            if r.kind == "shadow" and r.version_id in by_id
        ),
        None,
    )
    return AliasTarget(version=by_id[alias.version_id].version, weighted=weighted, shadow=shadow)
