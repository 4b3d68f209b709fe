"""The artifact store's garbage sweep: objects no live version uses go, live versions whose object is gone
are reported.

Deletes give their artifacts back as they commit (`artifact_guard`), but not everything does: versions
deleted before that existed, a clean-up the store refused (S3 down: one log line), a process ended between
storing an object and registering its version, or objects a backup restored. The sweep lists the store
in sha256 order and walks the registry's live digests in the same order beside it (a merge, in constant
memory whatever the sizes): an object no live version uses, older than the grace period, goes through
`artifact_guard.drop_if_unused`, which decides again under the artifact's lock, so an upload or redeploy
of the same bytes under way (on any replica) keeps it. A digest the listing lacks is looked up once more
(an upload may have stored it after the listing passed) and reported with its versions: those versions
cannot be loaded on a Triton that does not already hold them.

One sweep runs at a time across replicas (a Postgres advisory lock; a lock in the process on SQLite):
periodically on the replica that holds the lease, or when an admin asks (`POST /v1/artifacts/sweep`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import text

from control_plane.artifacts.base import ListedArtifact
from control_plane.errors import AppError, Conflict
from control_plane.fleet.leader import LeaderLease, is_postgres
from control_plane.registry import artifact_guard, repository

if TYPE_CHECKING:
    from control_plane.state import AppState

log = logging.getLogger(__name__)
SWEEP_LOCK = 0x63705F737765  # "cp_swe": one sweep at a time, whoever runs it
LEADER_LOCK = 0x63705F737770  # "cp_swp": the replica that sweeps periodically
PAGE = 1000  # live digests read from the registry at a time
MAX_VERIFIED = 1000  # digests the listing lacked that are checked again (the rest are counted as they are)
CLOCK_SKEW_S = 60.0
MAX_REPORTED = 100  # versions named in a report


class SweepBusy(Conflict):
    """Another sweep is under way (in this process or another replica)."""


class SweepFailed(AppError):
    """The registry's order of digests is not the store's (a collation that is not bytewise)."""

    status_code = 500
    kind = "SweepFailed"


@dataclass(frozen=True)
class MissingArtifact:
    """A live version whose artifact the store does not hold."""

    tenant: str
    model: str
    version: int
    sha256: str


@dataclass
class SweepReport:
    """What one sweep found and did."""

    dry_run: bool
    grace_s: float
    started_at: datetime
    seconds: float = 0.0
    listed: int = 0  # artifacts in the store
    listed_bytes: int = 0
    in_use: int = 0  # ... that a live version uses
    unused: int = 0  # ... that none does
    unused_bytes: int = 0
    recent: int = 0  # unused, but newer than the grace period: kept for now
    deleted: int = 0
    deleted_bytes: int = 0
    taken: int = 0  # unused when listed, taken by an upload or version before the delete: kept
    leftovers_removed: int = 0  # temp objects of uploads whose process ended
    missing: int = 0  # live digests the store lacks
    missing_versions: list[MissingArtifact] = field(default_factory=list)


class SweepMetrics:
    """The sweep's figures on /metrics (this process's sweeps)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sweeps = Counter(
            "cp_artifact_sweeps", "Artifact garbage sweeps run here, by result", ["result"], registry=registry
        )
        self.deleted = Counter(
            "cp_artifacts_swept", "Artifacts the sweep deleted (no live version used them)", registry=registry
        )
        self.deleted_bytes = Counter(
            "cp_artifact_swept_bytes", "Bytes of the artifacts the sweep deleted", registry=registry
        )
        self.missing = Gauge(
            "cp_artifacts_missing",
            "Artifacts live versions use that the store lacked at this process's last sweep",
            registry=registry,
        )
        self.last_success = Gauge(
            "cp_artifact_sweep_last_success_timestamp_seconds",
            "When this process's last sweep ended well (0: none yet)",
            registry=registry,
        )

    def record(self, report: SweepReport) -> None:
        """Count a finished sweep."""
        self.sweeps.labels(result="ok").inc()
        if not report.dry_run:
            self.deleted.inc(report.deleted)
            self.deleted_bytes.inc(report.deleted_bytes)
        self.missing.set(report.missing)
        self.last_success.set_to_current_time()


class ArtifactSweeper:
    """Runs sweeps: on request, and every `interval_s` on the replica holding the lease (0: never)."""

    def __init__(
        self, state: AppState, *, interval_s: float, grace_s: float, lock_timeout_s: float = 10.0
    ) -> None:
        self.state = state
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.metrics = SweepMetrics(state.metrics.registry)
        self._local = threading.Lock()
        self._lease = LeaderLease(state.settings.database_url, LEADER_LOCK, timeout_s=lock_timeout_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cp-artifact-sweep", daemon=True)

    def start(self) -> None:
        """Sweep every `interval_s` from now on (the first one an interval from now)."""
        if self.interval_s > 0:
            self._thread.start()

    def stop(self) -> None:
        """Stop sweeping; a sweep under way ends at its next artifact."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._lease.release()

    def sweep(self, *, grace_s: float | None = None, dry_run: bool = False) -> SweepReport:
        """Sweep now (SweepBusy if one is under way anywhere)."""
        grace = self.grace_s if grace_s is None else grace_s
        with self._exclusive():
            try:
                report = _sweep(self.state, grace_s=grace, dry_run=dry_run, stop=self._stop)
            except Exception:
                self.metrics.sweeps.labels(result="failed").inc()
                raise
        self.metrics.record(report)
        log.info(
            "artifact sweep%s: %d listed, %d in use, %d deleted (%d bytes), %d recent, %d missing, %.1f s",
            " (dry run)" if dry_run else "",
            report.listed,
            report.in_use,
            report.deleted,
            report.deleted_bytes,
            report.recent,
            report.missing,
            report.seconds,
        )
        if report.missing:
            log.warning("%d live artifacts not in the store: %s", report.missing, report.missing_versions)
        return report

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._local.acquire(blocking=False):
            raise SweepBusy("an artifact sweep is under way in this process; try again when it is done")
        try:
            if not is_postgres(self.state.settings.database_url):
                yield
                return
            # A session-level lock (it outlives the transaction, so the connection is not left idle in one);
            # a connection whose unlock failed is thrown away, not pooled with the lock still held.
            with self.state.internal_engine.connect() as conn:
                got = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": SWEEP_LOCK}).scalar()
                conn.commit()
                if not got:
                    raise SweepBusy("an artifact sweep is under way on another replica; try again later")
                try:
                    yield
                finally:
                    try:
                        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SWEEP_LOCK})
                        conn.commit()
                    except Exception:
                        conn.invalidate()
                        raise
        finally:
            self._local.release()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if self._lease.acquire():
                    self.sweep()
            except SweepBusy:
                log.info("artifact sweep skipped: another is under way")
            except Exception:
                log.exception("artifact sweep failed; next one in %.0f s", self.interval_s)


def _sweep(state: AppState, *, grace_s: float, dry_run: bool, stop: threading.Event) -> SweepReport:
    started = time.monotonic()
    now = datetime.now(UTC)
    cutoff = now - timedelta(seconds=grace_s)
    report = SweepReport(dry_run=dry_run, grace_s=grace_s, started_at=now)
    absent: list[str] = []  # live digests the listing lacked (the first MAX_VERIFIED of them)
    for stored, live in _merged(state.artifacts.listing(), _live_digests(state)):
        if stop.is_set():
            break
        if stored is None:
            report.missing += 1
            if len(absent) < MAX_VERIFIED:
                absent.append(live or "")
            continue
        report.listed += 1
        report.listed_bytes += stored.size_bytes
        if live is not None:
            report.in_use += 1
            continue
        report.unused += 1
        report.unused_bytes += stored.size_bytes
        if stored.modified > cutoff:
            report.recent += 1
        elif dry_run:
            continue
        elif artifact_guard.drop_if_unused(state, stored.sha256):
            report.deleted += 1
            report.deleted_bytes += stored.size_bytes
        else:
            report.taken += 1
    if not dry_run and not stop.is_set():
        report.leftovers_removed = state.artifacts.remove_leftovers(cutoff)
    _report_missing(state, report, absent)
    report.seconds = time.monotonic() - started
    return report


def _live_digests(state: AppState) -> Iterator[str]:
    """The digests live versions use, ascending, a page at a time (each page in a short transaction)."""
    after = ""
    while True:
        with state.internal_session_factory() as session:
            page = repository.live_digests(session, after=after, limit=PAGE)
        for sha256 in page:
            if sha256 <= after:
                raise SweepFailed(
                    "the registry does not order sha256 digests bytewise (its collation), so the sweep "
                    "cannot compare them with the store's listing; nothing more was deleted"
                )
            after = sha256
            yield sha256
        if len(page) < PAGE:
            return


def _ascending(listing: Iterator[ListedArtifact]) -> Iterator[ListedArtifact]:
    previous = ""
    for stored in listing:
        if stored.sha256 <= previous:
            raise SweepFailed("the artifact store did not list its objects in ascending order")
        previous = stored.sha256
        yield stored


def _merged(
    listing: Iterator[ListedArtifact], digests: Iterator[str]
) -> Iterator[tuple[ListedArtifact | None, str | None]]:
    """Both ascending sequences side by side: (object, digest) where both have it, else one is None."""
    stored = _ascending(listing)
    s, d = next(stored, None), next(digests, None)
    while s is not None or d is not None:
        if s is not None and (d is None or s.sha256 < d):
            yield s, None
            s = next(stored, None)
        elif s is None or (d is not None and d < s.sha256):
            yield None, d
            d = next(digests, None)
        else:
            yield s, d
            s, d = next(stored, None), next(digests, None)


def _report_missing(state: AppState, report: SweepReport, absent: list[str]) -> None:
    """Of the digests the listing lacked, a version registered since the sweep began (a clock's skew
    allowed for) may have stored its object after the listing passed: those are looked up again. Others
    were stored before their version, so before the listing began. Some missing ones' versions are named."""
    if not absent:
        return
    since = report.started_at - timedelta(seconds=CLOCK_SKEW_S)
    with state.internal_session_factory() as session:
        recent = repository.digests_registered_since(session, digests=absent, since=since)
    stored_since = [sha256 for sha256 in recent if state.artifacts.exists(sha256)]
    report.missing -= len(stored_since)
    missing = sorted(set(absent) - set(stored_since))[:MAX_REPORTED]
    if missing:
        with state.internal_session_factory() as session:
            rows = repository.live_versions_of(session, digests=missing, limit=MAX_REPORTED)
        report.missing_versions = [MissingArtifact(*row) for row in rows]
