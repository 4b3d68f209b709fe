"""Canary splits and shadow mirroring on an alias, and deleting an alias with them."""

from __future__ import annotations

from functools import partial

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db import hooks
from control_plane.db.models import Alias, AliasRoute, Model, ModelVersion, Tenant
from control_plane.lifecycle.schemas import Route, Shadow, Traffic, TrafficOut
from control_plane.lifecycle.service import ensure_ready_locked, load_unlocked, release_after_commit
from control_plane.registry import repository
from control_plane.registry.aliases import check_may_move
from control_plane.registry.exceptions import AliasNotFound, ModelNotFound
from control_plane.registry.versions import get_version
from control_plane.state import AppState


def _alias(session: Session, *, model: Model, alias_name: str, lock: bool = False) -> Alias:
    alias = repository.get_alias(session, model_id=model.id, name=alias_name, lock=lock)
    if alias is None:
        raise AliasNotFound(model.name, alias_name)
    return alias


def set_traffic(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    tenant: Tenant,
    model: Model,
    alias_name: str,
    body: Traffic,
) -> TrafficOut:
    """Replace the alias' canary routes and shadow; every version named is loaded and ready first, before
    the model's lock is taken (held through the loads, it queued every other change of the model)."""
    check_may_move(ctx=ctx, alias_name=alias_name, settings=state.settings)
    _alias(session, model=model, alias_name=alias_name)
    target = f"{tenant.name}/{model.name}@{alias_name}"
    wanted = [(r.version, "weighted", r.weight) for r in body.routes]
    if body.shadow is not None:
        wanted.append((body.shadow.version, "shadow", body.shadow.percent))
    for number in sorted({number for number, _, _ in wanted}):  # loaded first, holding nothing, as a promote
        version = get_version(session, model=model, number=number)
        load_unlocked(session, state=state, ctx=ctx, version=version, target=target, action="alias.traffic")
    repository.lock_model(session, model)
    _alias(session, model=model, alias_name=alias_name)
    rows = []
    for number, kind, weight in sorted(wanted):
        version = get_version(session, model=model, number=number)
        locked = ensure_ready_locked(
            session, state=state, ctx=ctx, version=version, target=target, action="alias.traffic"
        )
        rows.append((locked.id, kind, weight))
    if not repository.hold_model(session, model):  # SQLite: reads next are current (the loads are done)
        raise ModelNotFound(tenant.name, model.name)
    alias = _alias(session, model=model, alias_name=alias_name, lock=True)
    before = describe(session, state=state, tenant=tenant, model=model, alias=alias)
    old_ids = repository.remove_routes(session, alias_id=alias.id)
    for version_id, kind, weight in rows:
        session.add(AliasRoute(alias_id=alias.id, version_id=version_id, kind=kind, weight=weight))
        referenced = session.get(ModelVersion, version_id)
        if referenced is not None:
            referenced.released_at = None
    session.flush()
    release_after_commit(session, state=state, version_ids=old_ids - {r[0] for r in rows})
    after = describe(session, state=state, tenant=tenant, model=model, alias=alias)
    audit.record(
        session,
        actor=ctx.principal,
        action="alias.traffic",
        target=target,
        tenant=tenant.name,
        model=model.name,
        before=before.model_dump(exclude={"shadow_stats"}),
        after=after.model_dump(exclude={"shadow_stats"}),
        request_id=ctx.request_id,
    )
    return after


def delete_alias(
    session: Session, *, ctx: RequestContext, state: AppState, tenant: Tenant, model: Model, alias_name: str
) -> None:
    """Remove an alias with its canary split, shadow and history (the audit event keeps what it was, as
    a traffic change's does, and whether it was pinned: the pin stays, pins name aliases). Requests
    naming it get 404 once this commits, on every replica; the versions it named start their keep-warm
    period, and a version it held can be deleted. Protected aliases: admins only, as moves."""
    check_may_move(ctx=ctx, alias_name=alias_name, settings=state.settings, verb="delete")
    repository.hold_model(session, model)  # SQLite: what the lock reads next is current
    repository.lock_model(session, model)  # as a move: no promote or traffic change of the model beside
    if model.deleted_at is not None:  # deleted since it was read (the lock read it again)
        raise ModelNotFound(tenant.name, model.name)
    alias = _alias(session, model=model, alias_name=alias_name, lock=True)
    before = describe(session, state=state, tenant=tenant, model=model, alias=alias)
    named = repository.delete_alias(session, alias_id=alias.id)
    release_after_commit(session, state=state, version_ids=named | {alias.version_id})
    # A new alias of the name starts its shadow results afresh (this process's; each keeps its own).
    hooks.after_commit(
        session, partial(state.shadow.reset, tenant=tenant.name, model=model.name, alias=alias_name)
    )
    audit.record(
        session,
        actor=ctx.principal,
        action="alias.delete",
        target=f"{tenant.name}/{model.name}@{alias_name}",
        tenant=tenant.name,
        model=model.name,
        before={
            **before.model_dump(exclude={"shadow_stats"}),
            "pinned": alias_name in (model.pinned_aliases or ()),
        },
        request_id=ctx.request_id,
    )


def get_traffic(
    session: Session, *, state: AppState, tenant: Tenant, model: Model, alias_name: str
) -> TrafficOut:
    """The alias' current split, shadow and this process' shadow comparison statistics."""
    return describe(
        session,
        state=state,
        tenant=tenant,
        model=model,
        alias=_alias(session, model=model, alias_name=alias_name),
    )


def describe(session: Session, *, state: AppState, tenant: Tenant, model: Model, alias: Alias) -> TrafficOut:
    """An alias' traffic as the API shows it."""
    numbers = {
        v.id: v.version for v in repository.list_versions(session, model_id=model.id, include_retired=True)
    }
    routes = repository.alias_routes(session, alias_id=alias.id)
    weighted = [Route(version=numbers[r.version_id], weight=r.weight) for r in routes if r.kind == "weighted"]
    shadow_row = next((r for r in routes if r.kind == "shadow"), None)
    shadow = Shadow(version=numbers[shadow_row.version_id], percent=shadow_row.weight) if shadow_row else None
    stats = state.shadow.stats(tenant=tenant.name, model=model.name, alias=alias.name) if shadow else None
    return TrafficOut(
        alias=alias.name,
        version=numbers[alias.version_id],
        routes=weighted,
        shadow=shadow,
        shadow_stats=stats,
    )
