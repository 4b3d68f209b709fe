"""Keep-warm: a replaced version stays loaded for a while (instant rollback), then is unloaded.

One replica sweeps (it holds a Postgres advisory lock, `fleet.leader`); each sweep claims a version in a
transaction that re-checks, under the row lock promotions also take, that nothing references it, and marks
it `unloaded`. That is all it does: the commit is a change of the desired state, and the reconcile loop
unloads the released version from Triton under the version's lock, checking its state there again, so a
rollback that asked for the version since (its state `ready` again) keeps it. The janitor once unloaded
it itself and recorded `unloaded` after Triton's answer, overwriting such a rollback's `ready`.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import ModelVersion
from control_plane.db.session import transaction
from control_plane.fleet.leader import LeaderLease, LeaderLoop
from control_plane.registry import repository
from control_plane.timestamps import as_utc

log = logging.getLogger(__name__)
LEADER_LOCK = 0x63705F6A616E  # "cp_jan"


class KeepWarmJanitor:
    """Unloads versions that no alias or route has referenced for `keep_warm_s`, once idle."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        inflight: Counter[str],
        keep_warm_s: float,
        interval_s: float,
        database_url: str,
        lock_timeout_s: float = 10.0,
    ):
        self.session_factory = session_factory
        self.inflight = inflight
        self.keep_warm = timedelta(seconds=keep_warm_s)
        self.interval_s = interval_s
        # One replica sweeps (SQLite: the one process); a leader that dies or hangs hands over (keepalives).
        lease = LeaderLease(database_url, LEADER_LOCK, timeout_s=lock_timeout_s)
        self._loop = LeaderLoop(self.sweep, name="cp-keep-warm", interval_s=interval_s, lease=lease)

    def start(self) -> None:
        """Start sweeping."""
        self._loop.start()

    def stop(self) -> None:
        """Stop sweeping; give up leadership."""
        self._loop.stop()

    def sweep(self) -> list[int]:
        """Release every version whose keep-warm period is over (the reconcile loop unloads them);
        returns their ids."""
        cutoff = datetime.now(UTC) - self.keep_warm
        with self.session_factory() as session:
            candidates = repository.released_before(session, cutoff)
        return [version_id for version_id in candidates if self._claim(version_id, cutoff)]

    def _claim(self, version_id: int, cutoff: datetime) -> bool:
        with transaction(self.session_factory) as session:
            version = session.get(ModelVersion, version_id, with_for_update={"key_share": True})
            if (
                version is None
                or version.state != "ready"
                or version.released_at is None
                or as_utc(version.released_at) >= cutoff  # SQLite gives it back without its zone
                # Loaded again since (a rollback or promote on its way to referencing it): warm anew.
                or as_utc(version.updated_at) >= cutoff
                or self.inflight.get(version.triton_name, 0) > 0
                or repository.aliases_referencing(session, version_id=version_id)
            ):
                return False
            version.state, version.state_message = "unloaded", "unloaded after its keep-warm period"
            return True
