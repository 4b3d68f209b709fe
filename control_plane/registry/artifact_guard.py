"""Uploads of the same bytes and the clean-up of a failed one (or of deleted versions), kept apart.

Artifacts are stored by sha256, so two uploads of one file share one object. When one of them rolls back
it deletes the object unless a version uses it; the other may not have committed its version yet, and its
object would go with the first's clean-up. So an upload holds the artifact from before it stores the object
until its transaction ends, and the clean-up waits for that: on Postgres with a transaction-scoped advisory
lock on the sha256 (every replica), and in this process by counting the uploads under way (SQLite too).
Deleting versions (or their model) drops the artifacts no live version uses any more the same way: a
deleted version's artifact is garbage (no request, alias or redeploy reaches a retired version), and the
tenant's artifact-bytes quota no longer counts it. Nothing is deleted from a store whose marker names
another registry (`claim_store`): what this registry does not use, that one may.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.orm import Session

from control_plane.artifacts.base import OWNER_KEY
from control_plane.artifacts.exceptions import ArtifactError
from control_plane.db import hooks
from control_plane.errors import Conflict
from control_plane.registry import repository

if TYPE_CHECKING:
    from control_plane.state import AppState

log = logging.getLogger(__name__)
_under_way: Counter[str] = Counter()  # uploads holding each artifact in this process
_dropping: set[str] = set()  # artifacts this process is deciding about deleting (or deleting)
_guard = threading.Condition()


def _lock(session: Session, sha256: str) -> None:
    """On Postgres: until this transaction ends, no other transaction holds `sha256`'s lock."""
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(bytes.fromhex(sha256[:16]), "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def hold(session: Session, sha256: str) -> None:
    """Hold the artifact for an upload until the session's transaction commits or rolls back (call it
    before the object is stored, and before any hook that cleans it up is added). A clean-up of the same
    artifact that is deciding or deleting is waited for: after it, the upload finds the object gone."""
    _lock(session, sha256)
    with _guard:
        _guard.wait_for(lambda: sha256 not in _dropping)
        _under_way[sha256] += 1

    def release() -> None:
        with _guard:
            _under_way[sha256] -= 1
            if _under_way[sha256] <= 0:
                del _under_way[sha256]

    hooks.after_commit(session, release)
    hooks.on_rollback(session, release)


class StoreOwned(Conflict):
    """The artifact store's marker names another registry: deleting from it could lose that one's data."""


def claim_store(state: AppState, *, mark: bool = True) -> None:
    """Make sure the artifact store is this registry's: mark it when it has no marker yet (unless not
    `mark`: a dry run writes nothing); StoreOwned when its marker names another registry (a bucket shared
    by two registries, or a process pointed at the wrong database); ArtifactStoreUnavailable when the
    store does not answer."""
    with state.internal_session_factory() as session:
        ours = repository.registry_id(session)
    if ours is None:
        raise StoreOwned("the registry has no identity (its database is not migrated): nothing is deleted")
    owner = state.artifacts.read_owner()
    if owner is None:
        if not mark:
            return
        state.artifacts.write_owner(ours)
        owner = state.artifacts.read_owner()
    if owner != ours:
        raise StoreOwned(
            f"the artifact store belongs to another registry: its marker {OWNER_KEY} names {owner!r}, this "
            f"registry is {ours!r}. A store serves one registry, or deleting what this one does not use "
            "would lose the other's artifacts, so nothing was deleted. Give this registry a bucket (or "
            "folder) of its own; if the other registry is gone for good, delete the marker."
        )


def owns_store(state: AppState) -> bool:
    """`claim_store` as a yes or no (a no is logged): deletes happen only on a yes."""
    try:
        claim_store(state)
    except (StoreOwned, ArtifactError) as exc:
        log.warning("artifacts are not deleted: %s", exc.message)
        return False
    return True


def drop_if_unused(state: AppState, sha256: str, *, claimed: bool = False) -> bool:
    """Delete the artifact `sha256` unless a live version uses it or an upload of it is under way (stored
    for a transaction that rolled back, of versions deleted, or found by the garbage sweep); through the
    process's own pool. Whether it was deleted.

    Across processes the transaction-scoped lock keeps uploads of the same bytes out until the decision
    and the delete are done; in this process (SQLite's only one) `_dropping` does, and an upload holding
    the artifact already keeps it. The query that decides runs after both, so it sees every version an
    upload committed before. Nothing is deleted from a store this registry does not own (`claimed`: the
    caller just made sure it does)."""
    if not claimed and not owns_store(state):
        return False
    with state.internal_session_factory() as session:
        _lock(session, sha256)
        with _guard:
            if _under_way[sha256] or sha256 in _dropping:
                return False
            _dropping.add(sha256)
        try:
            if repository.sha_in_use(session, sha256):
                return False
            state.artifacts.delete(sha256)
            return True
        finally:
            with _guard:
                _dropping.discard(sha256)
                _guard.notify_all()
