"""Registry changes invalidate the routing table: locally after commit, elsewhere by Postgres NOTIFY.

Three kinds of change: anything the routing table is built from (it is rebuilt), placements' rows only
(the loop's loads and unloads: the table's placements are read again), and changes to the fleet's
desired state (versions, aliases, routes, replicas, instances: the reconcile loop runs too). A version
moving between states routing treats alike (`SERVABLE`: registered, unloaded, ready, loading), as a
request for a load does, is no routing change. The NOTIFY payload says which, and which process
committed (`<kind> <origin>`, and `desired <origin> placements` for a desired change that leaves the
table but its placements as they were): a process acts on its own commits when they commit, so it skips
their notifications (each was a second, full rebuild of the table, holding up the placements refresh
that makes a loaded version servable). Payloads of earlier releases (`desired` or empty) read as full
changes from elsewhere; those releases read `placements` and `routing` payloads as routing changes and
a desired placements change as a desired one, so across a rolling upgrade the loop there runs at its
interval rather than on a notification only for the loop's own loads and unloads.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from itertools import chain
from typing import Any, NamedTuple

from sqlalchemy import event, inspect, text
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from control_plane.db.models import (
    Alias,
    AliasRoute,
    ApiKey,
    Model,
    ModelReplicas,
    ModelVersion,
    Placement,
    Tenant,
    TritonInstance,
)
from control_plane.routing.table import SERVABLE

CHANNEL = "cp_registry"
DESIRED = "desired"  # NOTIFY kinds: a change to the fleet's desired state,
PLACEMENTS = "placements"  # placements' rows only,
ROUTING = "routing"  # anything else the routing table is built from
_FLAG = "cp_registry_changed"
_DESIRED_FLAG = "cp_desired_changed"
_PLACEMENTS_FLAG = "cp_placements_changed"  # only placements' rows changed (a load, an unload)
_COMMITTED = "cp_registry_committed"  # committed: the callbacks wait for the transaction to end
ROUTING_TABLES = (Tenant, ApiKey, Model, ModelVersion, Alias, AliasRoute, Placement, TritonInstance)
DESIRED_TABLES = (Model, ModelVersion, Alias, AliasRoute, ModelReplicas, TritonInstance)
_VERSION_ROUTED = ("model_id", "version", "triton_name", "config_text")  # read by the table, beside state


def mark_routing_changed(session: Session, *, desired: bool = False) -> None:
    """Flag a change made with Core statements (which the ORM events do not see)."""
    session.info[_FLAG] = True
    if desired:
        session.info[_DESIRED_FLAG] = True


def mark_placements_changed(session: Session) -> None:
    """Flag a change of placements' observed state made with Core statements: the routing table's
    placements are read again at commit."""
    session.info[_PLACEMENTS_FLAG] = True


def mark_desired_changed(session: Session) -> None:
    """Flag a change of placements' desired state (made with Core statements or not): the reconcile loop
    runs, here and on the leader elsewhere, and the routing table's placements are read again."""
    session.info[_PLACEMENTS_FLAG] = session.info[_DESIRED_FLAG] = True


class Notice(NamedTuple):
    """One NOTIFY: what the routing table must read again (ROUTING: all of it; PLACEMENTS: only its
    placements), the process that committed it (None: an earlier release), and whether the fleet's
    desired state changed (the loop runs)."""

    kind: str
    origin: str | None
    desired: bool = False


def read_notice(payload: str) -> Notice:
    """A NOTIFY payload (`<kind> <origin>`, `desired <origin> placements`; `desired` or empty from
    earlier releases)."""
    kind, _, rest = payload.partition(" ")
    origin, _, scope = rest.partition(" ")
    desired = kind == DESIRED
    if not origin:
        return Notice(ROUTING, None, desired)
    placements = kind == PLACEMENTS or (desired and scope == PLACEMENTS)
    return Notice(PLACEMENTS if placements else ROUTING, origin, desired)


def notice_payload(origin: str, *, routing: bool, desired: bool) -> str:
    """The payload of a commit's NOTIFY (see `read_notice`)."""
    if desired:
        return f"{DESIRED} {origin}" if routing else f"{DESIRED} {origin} {PLACEMENTS}"
    return f"{ROUTING if routing else PLACEMENTS} {origin}"


def routes_differently(session: Session, row: object) -> bool:
    """Whether a change to `row` (new, changed or deleted in `session`) can change the routing table
    beyond its placements. A version that only moved between states routing treats alike (a request
    for a load makes a registered or unloaded version ready) cannot: no rebuild for it."""
    if isinstance(row, Placement):
        return False
    if not isinstance(row, ModelVersion) or row in session.new or row in session.deleted:
        return True
    attrs = inspect(row).attrs
    if any(attrs[key].history.has_changes() for key in _VERSION_ROUTED):
        return True
    state = attrs.state.history
    if state.has_changes():
        before = state.deleted[0] if state.deleted else None  # not loaded before the change: assume it
        if before not in SERVABLE or row.state not in SERVABLE:
            return True
    return row.state == "failed" and attrs.state_message.history.has_changes()


def install(
    *session_factories: sessionmaker[Session],
    on_change: Callable[[], None],
    on_desired: Callable[[], None] | None = None,
    on_placements: Callable[[], None] | None = None,
) -> str:
    """Watch every session of the factories: a commit touching routing data NOTIFYs and calls on_change
    (on_placements instead when only placements' rows changed, the loop's loads and unloads: the
    table's placements are read again, not the whole registry); one touching the desired state also
    calls on_desired. Returns the origin its notifications carry (its watcher skips them)."""
    origin = uuid.uuid4().hex[:16]

    def mark(session: Session, *_: Any) -> None:
        touched = list(chain(session.new, session.dirty, session.deleted))
        routing = [o for o in touched if isinstance(o, ROUTING_TABLES)]
        if any(routes_differently(session, o) for o in routing):
            session.info[_FLAG] = True
        elif any(isinstance(o, Placement) for o in routing):
            session.info[_PLACEMENTS_FLAG] = True
        if any(isinstance(o, DESIRED_TABLES) for o in touched):
            session.info[_DESIRED_FLAG] = True

    def notify(session: Session) -> None:
        session.flush()  # so the flag sees changes still pending at commit time
        changed = session.info.get(_FLAG) or session.info.get(_PLACEMENTS_FLAG)
        desired = session.info.get(_DESIRED_FLAG, False)
        if (changed or desired) and session.get_bind().dialect.name == "postgresql":
            # Delivered to every listener (other replicas) when this transaction commits.
            payload = notice_payload(origin, routing=bool(session.info.get(_FLAG)), desired=desired)
            session.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
            )

    def committed(session: Session) -> None:
        # SQLAlchemy calls this while the session still holds its connection: the callbacks (the table's
        # rebuild reads the registry, with a connection of its own) run once the transaction has ended and
        # given it back, so a burst of commits never needs two connections each from the pool.
        session.info[_COMMITTED] = True

    def ended(session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is not None or not session.info.pop(_COMMITTED, False):
            return
        desired = session.info.pop(_DESIRED_FLAG, False)
        placements = session.info.pop(_PLACEMENTS_FLAG, False)
        if desired and on_desired is not None:
            on_desired()  # first: the loop's pass (another thread) need not wait for the table's rebuild
        if session.info.pop(_FLAG, False):
            on_change()
        elif placements:
            (on_placements or on_change)()

    def rolled_back(session: Session) -> None:
        for flag in (_FLAG, _DESIRED_FLAG, _PLACEMENTS_FLAG, _COMMITTED):
            session.info.pop(flag, None)

    for session_factory in session_factories:
        event.listen(session_factory, "before_flush", mark)
        event.listen(session_factory, "before_commit", notify)
        event.listen(session_factory, "after_commit", committed)
        event.listen(session_factory, "after_transaction_end", ended)
        event.listen(session_factory, "after_rollback", rolled_back)
    return origin
