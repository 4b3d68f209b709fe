"""The fleet API's logic: list, add, re-address and drain instances; a model's replicas and placements."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db.models import Model, ModelReplicas, Tenant, TritonInstance
from control_plane.fleet import repository
from control_plane.fleet.exceptions import InstanceConflict, InstanceNotFound
from control_plane.fleet.instances import grpc_url_for
from control_plane.fleet.schemas import (
    INSTANCE_NAME,
    InstanceCreate,
    InstanceOut,
    InstanceUpdate,
    ModelPlacement,
    PlacementOut,
    VersionInstance,
    VersionPlacement,
)
from control_plane.state import AppState


def list_instances(session: Session, *, state: AppState) -> list[InstanceOut]:
    """Every instance of the fleet with its placements (desired and observed)."""
    rows = repository.instance_rows(session)
    placements = _placements_by_instance(session, [row.id for row in rows])
    return [_out(row, placements.get(row.id, []), state) for row in rows]


def get_instance(session: Session, *, state: AppState, name: str) -> InstanceOut:
    """One instance with its placements, or 404."""
    row = _found(session, name)
    return _out(row, _placements_by_instance(session, [row.id]).get(row.id, []), state)


def create_instance(session: Session, *, ctx: RequestContext, body: InstanceCreate) -> TritonInstance:
    """Add a Triton server to the fleet (the reconcile loop probes it and places versions on it)."""
    if repository.get_instance(session, body.name) is not None:
        raise InstanceConflict(f"instance '{body.name}' already exists")
    _check_address_free(session, body.http_url, name=body.name)
    row = TritonInstance(
        name=body.name,
        http_url=body.http_url,
        grpc_url=body.grpc_url or grpc_url_for(body.http_url),
        origin="api",
    )
    session.add(row)
    session.flush()
    _audit(session, ctx, "instance.add", row, before=None)
    return row


def update_instance(
    session: Session, *, ctx: RequestContext, name: str, body: InstanceUpdate
) -> TritonInstance:
    """Give an instance its current address (it restarted elsewhere; its placements follow it) and/or
    its memory budget (residency: the loop evicts down to it)."""
    row = _found(session, name, lock=True)
    before: dict[str, object] = {"http_url": row.http_url, "grpc_url": row.grpc_url}
    if "memory_budget_bytes" in body.model_fields_set:
        before["memory_budget_bytes"] = row.memory_budget_bytes
        row.memory_budget_bytes = body.memory_budget_bytes
    if body.http_url is not None:
        if row.origin == "embedded":
            raise InstanceConflict("the embedded Triton's address is managed by the process that runs it")
        _check_address_free(session, body.http_url, name=name)
        row.http_url, row.grpc_url = body.http_url, body.grpc_url or grpc_url_for(body.http_url)
        row.state = "unknown"
    session.flush()
    _audit(session, ctx, "instance.update", row, before=before)
    return row


def drain_instance(session: Session, *, ctx: RequestContext, name: str) -> TritonInstance:
    """Start draining: the loop moves its placements to other instances, then removes it."""
    row = _found(session, name, lock=True)
    if row.origin == "embedded":
        raise InstanceConflict("the embedded Triton belongs to the process that runs it; stop that process")
    if row.draining_since is not None:
        return row
    if not repository.another_live_instance(session, name):
        raise InstanceConflict(
            f"instance '{name}' is the last one: no other instance can take its placements"
        )
    row.draining_since = datetime.now(UTC)
    session.flush()
    _audit(session, ctx, "instance.drain", row, before=None)
    return row


def describe(row: TritonInstance, *, state: AppState, session: Session) -> InstanceOut:
    """An instance row as the API shows it."""
    return _out(row, _placements_by_instance(session, [row.id]).get(row.id, []), state)


def model_placement(session: Session, *, state: AppState, model: Model) -> ModelPlacement:
    """The model's replicas and where each of its live versions is placed."""
    setting = repository.replicas_setting(session, model.id)
    versions = [
        VersionPlacement(
            version=placed.version,
            state=placed.state,  # type: ignore[arg-type]
            instances=[
                VersionInstance(instance=i, desired=d, observed=o, message=m)  # type: ignore[arg-type]
                for i, d, o, m in placed.placements
            ],
        )
        for placed in repository.model_versions_placed(session, model.id)
    ]
    replicas = setting.replicas if setting is not None else state.settings.default_replicas
    return ModelPlacement(
        replicas=replicas,
        default=setting is None,
        pinned_aliases=list(model.pinned_aliases or []),
        versions=versions,
    )


def set_pins(
    session: Session, *, ctx: RequestContext, tenant: Tenant, model: Model, aliases: list[str]
) -> None:
    """Pin the versions of these aliases resident (never evicted for memory; audited)."""
    before = list(model.pinned_aliases or [])
    model.pinned_aliases = sorted(set(aliases))
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="model.pin",
        target=f"{tenant.name}/{model.name}",
        tenant=tenant.name,
        model=model.name,
        before={"pinned_aliases": before},
        after={"pinned_aliases": model.pinned_aliases},
        request_id=ctx.request_id,
    )


def set_replicas(
    session: Session, *, ctx: RequestContext, tenant: Tenant, model: Model, replicas: int
) -> None:
    """Set how many instances serve each servable version of the model (audited; the loop acts on it)."""
    setting = repository.replicas_setting(session, model.id, lock=True)
    before = None if setting is None else setting.replicas
    if setting is None:
        session.add(ModelReplicas(model_id=model.id, replicas=replicas))
    else:
        setting.replicas, setting.updated_at = replicas, datetime.now(UTC)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="model.replicas",
        target=f"{tenant.name}/{model.name}",
        tenant=tenant.name,
        model=model.name,
        before={"replicas": before},
        after={"replicas": replicas},
        request_id=ctx.request_id,
    )


def _found(session: Session, name: str, *, lock: bool = False) -> TritonInstance:
    # A name no instance can have (a NUL byte, say: the database refuses it) is not looked up.
    if re.fullmatch(INSTANCE_NAME, name) is None:
        raise InstanceNotFound(name)
    row = repository.get_instance(session, name, lock=lock)
    if row is None:
        raise InstanceNotFound(name)
    return row


def _check_address_free(session: Session, http_url: str, *, name: str) -> None:
    other = repository.instance_at(session, http_url, other_than=name)
    if other is not None:
        raise InstanceConflict(f"instance '{other}' already has the address {http_url}")


def _audit(
    session: Session,
    ctx: RequestContext,
    action: str,
    row: TritonInstance,
    *,
    before: dict[str, object] | None,
) -> None:
    audit.record(
        session,
        actor=ctx.principal,
        action=action,
        target=f"instance/{row.name}",
        before=before,
        after={
            "http_url": row.http_url,
            "grpc_url": row.grpc_url,
            "draining": row.draining_since is not None,
            "memory_budget_bytes": row.memory_budget_bytes,
        },
        request_id=ctx.request_id,
    )


def _placements_by_instance(session: Session, instance_ids: list[int]) -> dict[int, list[PlacementOut]]:
    found: dict[int, list[PlacementOut]] = {}
    for named in repository.named_placements(session, instance_ids):
        placement = named.placement
        found.setdefault(placement.instance_id, []).append(
            PlacementOut(
                tenant=named.tenant,
                model=named.model,
                version=named.version,
                triton_model=named.triton_name,
                desired=placement.desired,  # type: ignore[arg-type]
                observed=placement.state,
                message=placement.message,
                loaded_at=placement.loaded_at,
                updated_at=placement.updated_at,
            )
        )
    return found


def _out(row: TritonInstance, placements: list[PlacementOut], state: AppState) -> InstanceOut:
    reconciler = state.reconciler
    drift = reconciler.observed.drift.get(row.name) if reconciler is not None else None
    budgets = reconciler.budgets if reconciler is not None else None
    plan = budgets.plans.get(row.name) if budgets is not None else None
    stats = state.residency.stats
    budget = row.memory_budget_bytes or state.settings.instance_memory_budget_bytes or None
    return InstanceOut(
        memory_budget_bytes=budget,
        resident_bytes=stats.resident_bytes.get(row.name),
        resident_versions=stats.resident_versions.get(row.name),
        pinned_over_budget_bytes=stats.pinned_over_bytes.get(row.name),
        over_budget_bytes=stats.over_budget(row.name),
        waiting_for_room=plan.waiting if plan is not None else [],
        name=row.name,
        http_url=row.http_url,
        grpc_url=row.grpc_url,
        origin=row.origin,  # type: ignore[arg-type]
        state=row.state,
        draining=row.draining_since is not None,
        draining_since=row.draining_since,
        last_seen_at=row.last_seen_at,
        last_reconciled_at=row.last_reconciled_at,
        last_error=row.last_error,
        drift=drift,
        placements=placements,
    )
