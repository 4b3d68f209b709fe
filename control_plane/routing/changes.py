"""Registry changes invalidate the routing table: locally after commit, elsewhere by Postgres NOTIFY."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Alias, AliasRoute, ApiKey, Model, ModelVersion, Tenant

CHANNEL = "cp_registry"
_FLAG = "cp_registry_changed"
ROUTING_TABLES = (Tenant, ApiKey, Model, ModelVersion, Alias, AliasRoute)


def install(session_factory: sessionmaker[Session], *, on_change: Callable[[], None]) -> None:
    """Watch every session of the factory; a commit touching routing data NOTIFYs and calls on_change."""

    def mark(session: Session, *_: Any) -> None:
        if any(isinstance(o, ROUTING_TABLES) for o in chain(session.new, session.dirty, session.deleted)):
            session.info[_FLAG] = True

    def notify(session: Session) -> None:
        session.flush()  # so the flag sees changes still pending at commit time
        if session.info.get(_FLAG) and session.get_bind().dialect.name == "postgresql":
            # Delivered to every listener (other replicas) when this transaction commits.
            session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})

    def committed(session: Session) -> None:
        if session.info.pop(_FLAG, False):
            on_change()

    def rolled_back(session: Session) -> None:
        session.info.pop(_FLAG, None)

    event.listen(session_factory, "before_flush", mark)
    event.listen(session_factory, "before_commit", notify)
    event.listen(session_factory, "after_commit", committed)
    event.listen(session_factory, "after_rollback", rolled_back)
