"""Promote and roll back: load first, then switch the alias in one transaction with history and audit."""

from __future__ import annotations

import logging
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db import hooks
from control_plane.db.models import Alias, AliasHistory, Model, ModelVersion, Tenant
from control_plane.db.session import transaction
from control_plane.fleet import repository as fleet_repository
from control_plane.fleet.loader import NO_ROOM, NO_ROOM_DETAIL
from control_plane.lifecycle.schemas import AliasMove, HistoryEntry
from control_plane.paging import Listing, Page, cut
from control_plane.registry import repository
from control_plane.registry.aliases import check_may_move
from control_plane.registry.exceptions import AliasNotFound, ModelNotFound, VersionConflict
from control_plane.registry.versions import get_version, public_state_message
from control_plane.routing.table import public_reason
from control_plane.state import AppState
from control_plane.tenants import quota

log = logging.getLogger(__name__)
ATTEMPTS = 3  # a keep-warm unload may slip in between load and lock; then load again


def promote(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    tenant: Tenant,
    model: Model,
    alias_name: str,
    number: int,
    reason: str | None,
) -> AliasMove:
    """Load the version if needed, wait until ready, then point the alias at it (clearing a canary split)."""
    check_may_move(ctx=ctx, alias_name=alias_name, settings=state.settings)
    target = f"{tenant.name}/{model.name}@{alias_name}"
    version = get_version(session, model=model, number=number)  # a missing version is 404 first
    if repository.get_alias(session, model_id=model.id, name=alias_name) is None:  # refused before its load
        quota.check_alias(session, tenant=tenant, settings=state.settings, lock=False)
    load_unlocked(session, state=state, ctx=ctx, version=version, target=target)
    repository.lock_model(session, model)
    version = get_version(session, model=model, number=number)
    return _move(
        session,
        ctx=ctx,
        state=state,
        tenant=tenant,
        model=model,
        alias_name=alias_name,
        version=version,
        action="promote",
        reason=reason,
    )


def rollback(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    tenant: Tenant,
    model: Model,
    alias_name: str,
    to_version: int | None,
    reason: str | None,
) -> AliasMove:
    """Back to the version the alias had before (or `to_version`), reloading it first if it was unloaded."""
    check_may_move(ctx=ctx, alias_name=alias_name, settings=state.settings)
    target = f"{tenant.name}/{model.name}@{alias_name}"
    version = _rollback_target(session, model=model, alias_name=alias_name, to_version=to_version)
    load_unlocked(session, state=state, ctx=ctx, version=version, target=target, action="alias.rollback")
    repository.lock_model(session, model)
    version = _rollback_target(session, model=model, alias_name=alias_name, to_version=to_version)
    return _move(
        session,
        ctx=ctx,
        state=state,
        tenant=tenant,
        model=model,
        alias_name=alias_name,
        version=version,
        action="rollback",
        reason=reason,
    )


def _rollback_target(
    session: Session, *, model: Model, alias_name: str, to_version: int | None
) -> ModelVersion:
    """The version a rollback of the alias goes to: `to_version`, else the one it had before."""
    alias = repository.get_alias(session, model_id=model.id, name=alias_name)
    if alias is None:
        raise AliasNotFound(model.name, alias_name)
    if to_version is not None:
        return get_version(session, model=model, number=to_version)
    return _previous(session, alias)


def load_unlocked(
    session: Session,
    *,
    state: AppState,
    ctx: RequestContext,
    version: ModelVersion,
    target: str,
    action: str = "alias.promote",
) -> None:
    """Load the version an alias is about to move onto before the model's lock is taken.

    A load takes seconds (up to `CP_TRITON_LOAD_TIMEOUT_S`). Held through it, the model's lock queued every
    other change of the model behind it, each holding a database connection, until the pool ran dry for
    every tenant. So the transaction is ended first (no lock, snapshot or connection held while Triton
    loads), and the move locks the model afterwards and finds the version ready.
    """
    if version.state == "ready" and _served(state, version.triton_name):
        return
    session.rollback()
    _load_or_refuse(session, state=state, ctx=ctx, version=version, target=target, action=action)


def _move(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    tenant: Tenant,
    model: Model,
    alias_name: str,
    version: ModelVersion,
    action: str,
    reason: str | None,
) -> AliasMove:
    """Make the version ready (loading it if needed) and switch the alias to it."""
    target = f"{tenant.name}/{model.name}@{alias_name}"
    locked = ensure_ready_locked(
        session, state=state, ctx=ctx, version=version, target=target, action=f"alias.{action}"
    )
    return switch(
        session,
        ctx=ctx,
        state=state,
        tenant=tenant,
        model=model,
        alias_name=alias_name,
        version=locked,
        action=action,
        reason=reason,
        create=action == "promote",
    )


def _previous(session: Session, alias: Alias) -> ModelVersion:
    last = repository.last_move_to(session, alias_id=alias.id, version_id=alias.version_id)
    if last is None or last.from_version_id is None:
        raise VersionConflict(f"alias '{alias.name}' has no previous version to roll back to")
    previous = session.get(ModelVersion, last.from_version_id)
    if previous is None or previous.state == "retired":
        raise VersionConflict(
            f"alias '{alias.name}' previous version is retired; name a version with to_version"
        )
    return previous


def ensure_ready_locked(
    session: Session, *, state: AppState, ctx: RequestContext, version: ModelVersion, target: str, action: str
) -> ModelVersion:
    """The version row, ready and locked against keep-warm unloading: loaded first if needed.

    The row lock (FOR NO KEY UPDATE, so foreign-key checks of other moves don't block on it) is taken in
    a savepoint: if the version was unloaded in between, the savepoint is rolled back to drop the lock
    while it loads again. A failed load is audited in its own transaction and refused.
    """
    for _ in range(ATTEMPTS):
        if version.state != "ready" or not _served(state, version.triton_name):
            _load_or_refuse(session, state=state, ctx=ctx, version=version, target=target, action=action)
        savepoint = session.begin_nested()
        locked = session.get(
            ModelVersion, version.id, with_for_update={"key_share": True}, populate_existing=True
        )
        if locked is not None and locked.state == "ready":
            savepoint.commit()
            return locked
        savepoint.rollback()
        session.refresh(version)
    raise VersionConflict(f"version {version.version} was unloaded while being promoted; retry")


def _load_or_refuse(
    session: Session, *, state: AppState, ctx: RequestContext, version: ModelVersion, target: str, action: str
) -> None:
    """Load the version and wait until it is ready; a failed load is audited and refused."""
    timeout, why = state.settings.triton_load_timeout_s, None
    identity = inspect(version).identity  # the id without loading the row (it may be expired): the wait
    assert identity is not None  # below must hold no connection
    try:
        outcome = state.loader.submit_load(identity[0]).result(timeout=timeout)
    except FutureTimeout:
        outcome, why = "timeout", f"its load did not finish within {timeout:g} s"
    if outcome == NO_ROOM:
        why = NO_ROOM_DETAIL
    session.refresh(version)
    if version.state == "retired":  # deleted (or its model) while it loaded: the lookup after the lock is 404
        return
    if outcome == "ready" and version.state == "unloaded":  # released by keep-warm since: the caller loads
        return  # it again (`ensure_ready_locked`); refused here, a slow move was a 409 "it is unloaded"
    if outcome != "ready" or version.state != "ready":
        _refuse(state, ctx=ctx, version=version, target=target, action=action, why=why)


def _served(state: AppState, triton_name: str) -> bool:
    """Whether some Triton really has the version loaded (the registry's `ready` is what it should have:
    after a Triton restart the reconcile loop may not have loaded it back yet)."""
    for triton in state.tritons:
        try:
            if triton.health.is_model_ready(triton_name):
                return True
        except Exception as exc:  # unreachable, or an answer we cannot use: not served there
            log.info("Triton %s cannot say whether %s is ready: %s", triton.name, triton_name, exc)
    return False


def _refuse(
    state: AppState,
    *,
    ctx: RequestContext,
    version: ModelVersion,
    target: str,
    action: str,
    why: str | None = None,
) -> None:
    """Write the failed attempt's audit event in its own transaction, then refuse (`why`: the reason,
    when the load did not finish)."""
    tenant, _, rest = target.partition("/")
    model = rest.split("@")[0]
    detail = public_state_message(version, model) or version.state
    with transaction(state.session_factory) as own:
        if version.state == "ready":  # the load failed but the registry still calls it servable: say why
            failures = [p.message for p in fleet_repository.placements_of(own, version.id) if p.message]
            failure = public_reason(failures[0], version.triton_name, model) if failures else None
            detail = why or failure or "its load did not finish"
        audit.record(
            own,
            actor=ctx.principal,
            action=action,
            target=target,
            tenant=tenant,
            model=model,
            after={"version": version.version},
            outcome="failure",
            request_id=ctx.request_id,
            before={"error": detail[:1000]},
        )
    if why is not None and version.state == "ready":
        raise VersionConflict(f"version {version.version} cannot serve now: {why}")
    status = "failed" if version.state == "ready" else version.state
    raise VersionConflict(f"version {version.version} cannot serve: it is {status} ({detail})")


def switch(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    tenant: Tenant,
    model: Model,
    alias_name: str,
    version: ModelVersion,
    action: str,
    reason: str | None,
    create: bool,
) -> AliasMove:
    """Point the alias at `version` (row-locked, so concurrent moves serialize), with history and audit."""
    now = datetime.now(UTC)
    if not repository.hold_model(session, model):  # SQLite: what is read next is current
        raise ModelNotFound(tenant.name, model.name)
    alias = repository.get_alias(session, model_id=model.id, name=alias_name, lock=True)
    previous: ModelVersion | None = None
    dropped: set[int] = set()
    if alias is None:
        if not create:
            raise AliasNotFound(model.name, alias_name)
        # A new alias: within the tenant's quota (its lock taken after the model's, as an upload's).
        quota.check_alias(session, tenant=tenant, settings=state.settings)
        alias = Alias(model_id=model.id, name=alias_name, version_id=version.id)
        session.add(alias)
        session.flush()
    else:
        previous = session.get(ModelVersion, alias.version_id)
        dropped = repository.remove_routes(session, alias_id=alias.id, kind="weighted")
        alias.version_id, alias.updated_at = version.id, now
    version.released_at = None
    if previous is None or previous.id != version.id:  # a move to where it is (a canary ended) is no move
        session.add(
            AliasHistory(
                alias_id=alias.id,
                from_version_id=previous.id if previous else None,
                to_version_id=version.id,
                action=action,
                actor_key_id=ctx.principal.key_id,
                actor=ctx.principal.label,
                reason=reason,
            )
        )
    session.flush()
    release_after_commit(session, state=state, version_ids=dropped | ({previous.id} if previous else set()))
    before = {"version": previous.version if previous else None}
    audit.record(
        session,
        actor=ctx.principal,
        action=f"alias.{action}",
        target=f"{tenant.name}/{model.name}@{alias_name}",
        tenant=tenant.name,
        model=model.name,
        before=before,
        after={"version": version.version},
        request_id=ctx.request_id,
    )
    return AliasMove(
        alias=alias_name,
        version=version.version,
        previous_version=previous.version if previous else None,
        action=action,
    )


def release_after_commit(session: Session, *, state: AppState, version_ids: set[int]) -> None:
    """Once this change commits, start the keep-warm clock of versions nothing references any more.

    Done in a transaction of its own, so a move never holds locks on versions it lets go of.
    """
    if not version_ids:
        return
    now = datetime.now(UTC)

    def release() -> None:
        with transaction(state.session_factory) as own:
            for version_id in sorted(version_ids):  # the order moves lock versions in: no deadlock
                version = own.get(ModelVersion, version_id)
                if version is not None and not repository.aliases_referencing(own, version_id=version_id):
                    version.released_at = now

    hooks.after_commit(session, release)


def history(
    session: Session, *, model: Model, alias_name: str, page: Page[int] | None = None
) -> Listing[HistoryEntry]:
    """The alias' moves, newest first: one page of them, or every one without `page`."""
    alias = repository.get_alias(session, model_id=model.id, name=alias_name)
    if alias is None:
        raise AliasNotFound(model.name, alias_name)
    numbers = {
        v.id: v.version for v in repository.list_versions(session, model_id=model.id, include_retired=True)
    }
    rows = cut(repository.alias_history(session, alias_id=alias.id, page=page), page, key=lambda r: r.id)
    return rows.map(
        lambda row: HistoryEntry(
            action=row.action,
            from_version=numbers.get(row.from_version_id) if row.from_version_id else None,
            to_version=numbers[row.to_version_id],
            actor=row.actor,
            reason=row.reason,
            at=row.created_at,
        )
    )
