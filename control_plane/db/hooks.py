"""Side effects tied to the fate of a transaction: run after commit, or compensate after rollback."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session

log = logging.getLogger(__name__)
_AFTER_COMMIT = "cp_after_commit"
_ON_ROLLBACK = "cp_on_rollback"


def after_commit(session: Session, action: Callable[[], object]) -> None:
    """Run `action` once the session's transaction has committed (e.g. start a load)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(action)


def on_rollback(session: Session, action: Callable[[], object]) -> None:
    """Run `action` if the transaction rolls back (e.g. delete an object stored for it)."""
    session.info.setdefault(_ON_ROLLBACK, []).append(action)


def _run(session: Session, key: str, discard: str) -> None:
    session.info.pop(discard, None)
    for action in session.info.pop(key, []):
        try:
            action()
        except Exception:  # a hook must not turn a finished transaction into an error
            log.exception("transaction hook %s failed", key)


def committed(session: Session) -> None:
    """Call right after a successful commit."""
    _run(session, _AFTER_COMMIT, _ON_ROLLBACK)


def rolled_back(session: Session) -> None:
    """Call right after a rollback."""
    _run(session, _ON_ROLLBACK, _AFTER_COMMIT)
