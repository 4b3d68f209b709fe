"""Audit retention: events older than `CP_AUDIT_RETENTION_DAYS` are deleted, hourly, by one replica.

Unset (0), the audit log is kept for ever, as before. Set, the replica holding the lease deletes what is
older, in batches of `BATCH` rows, each its own short transaction, so neither a long lock nor a long
transaction holds up the writers of new events. Each purge that deleted anything is itself audited
(`audit.purge`, actor `system:audit-retention`, with the cutoff and the count), and that event is newer than
any cutoff, so the log always says what was removed and when. There is no API to delete events: retention is
the operators' setting, not something a leaked admin key can use to erase its tracks. Ship the log elsewhere
(`GET /v1/audit`, paged) before events reach the retention age if they must be kept longer.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.orm import Session, sessionmaker

from control_plane.audit import repository
from control_plane.audit import service as audit
from control_plane.auth.principal import Principal, Role
from control_plane.db.session import transaction
from control_plane.fleet.leader import LeaderLease, LeaderLoop

log = logging.getLogger(__name__)
LEADER_LOCK = 0x63705F617564  # "cp_aud": the replica that purges
SYSTEM = Principal(role=Role.ADMIN, tenant_id=None, key_id=None, label="system:audit-retention")
BATCH = 5000


class AuditRetention:
    """Deletes events older than `retention_days` every `interval_s` on the replica holding the lease."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        database_url: str,
        retention_days: float,
        interval_s: float,
        registry: CollectorRegistry,
        lock_timeout_s: float = 10.0,
        batch: int = BATCH,
    ) -> None:
        self.session_factory = session_factory
        self.retention_days = retention_days
        self.interval_s = interval_s
        self.batch = batch
        self.purged = Counter(
            "cp_audit_purged", "Audit events deleted for being older than the retention", registry=registry
        )
        self.purges = Counter(
            "cp_audit_purges",
            "Audit purges this replica ran as the leader, by result (ok: complete; failed: an error)",
            ["result"],
            registry=registry,
        )
        for result in ("ok", "failed"):  # exported from the start: `increase()` misses a series' first step
            self.purges.labels(result=result)
        self.last_success = Gauge(
            "cp_audit_purge_last_success_timestamp_seconds",
            "When this replica's last audit purge ended well (0: none yet)",
            registry=registry,
        )
        self._lease = LeaderLease(database_url, LEADER_LOCK, timeout_s=lock_timeout_s)
        self._loop = LeaderLoop(
            self.purge, name="cp-audit-retention", interval_s=interval_s, lease=self._lease, first_now=True
        )

    def start(self) -> None:
        """Purge now and every `interval_s` (when a retention is set)."""
        if self.retention_days > 0:
            self._loop.start()

    def stop(self) -> None:
        """Stop purging; a purge under way ends after its batch."""
        self._loop.stop()

    def purge(self, *, now: datetime | None = None) -> int:
        """Delete every event older than the retention, batch by batch, if this replica leads (and while it
        does); how many went, audited when not 0."""
        if not self._lease.acquire():
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
        deleted, finished = 0, False
        try:
            while not finished and not self._loop.stopping.is_set() and self._lease.held():
                with transaction(self.session_factory) as session:
                    gone = repository.delete_older(session, older_than=cutoff, batch=self.batch)
                deleted += gone
                self.purged.inc(gone)
                finished = gone < self.batch
        except Exception as exc:
            self.purges.labels(result="failed").inc()
            self._audit(cutoff, deleted, finished=False, error=type(exc).__name__)
            raise
        self._audit(cutoff, deleted, finished=finished, error=None)
        if finished:
            self.purges.labels(result="ok").inc()
            self.last_success.set_to_current_time()
        return deleted

    def _audit(self, cutoff: datetime, deleted: int, *, finished: bool, error: str | None) -> None:
        """Record a purge that deleted anything, finished or not (a batch that failed, a stop, a lost
        lease), so that the log always says what left it."""
        if not deleted:
            return
        figures: dict[str, object] = {"older_than": cutoff.isoformat(), "deleted": deleted}
        if not finished:
            figures["finished"] = False
        if error is not None:
            figures["error"] = error
        with transaction(self.session_factory) as session:
            audit.record(
                session,
                actor=SYSTEM,
                action="audit.purge",
                target="audit",
                after=figures,
                outcome="success" if error is None else "failure",
            )
        log.info("audit retention: %d events older than %s deleted", deleted, cutoff.isoformat())
