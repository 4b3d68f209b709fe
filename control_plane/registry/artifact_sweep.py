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

A store belongs to one registry: its marker (`control-plane/registry-id`) names the registry's id, written
by the first sweep or clean-up that finds none; a registry whose id it does not name deletes nothing there
(two registries on one bucket would otherwise delete each other's artifacts, and a process pointed at the
wrong database the whole bucket). Uploads' leftover temp objects go only once a day old, whatever the
grace: an upload under way keeps its own.

One sweep runs at a time across replicas (a Postgres advisory lock on a connection of its own, checked
before each delete; a lock in the process on SQLite): periodically on the replica that holds the lease,
or when an admin asks (`POST /v1/artifacts/sweep`). Each sweep is audited (`artifacts.sweep`, by the admin
who asked or by `system:artifact-sweep`), the deletes of one that failed midway too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from control_plane.artifacts.base import ListedArtifact
from control_plane.audit import service as audit
from control_plane.auth.principal import Principal, Role
from control_plane.db.session import transaction
from control_plane.errors import AppError, Conflict, ServiceUnavailable
from control_plane.fleet.leader import LeaderLease, LeaderLoop
from control_plane.registry import artifact_guard, repository

if TYPE_CHECKING:
    from control_plane.state import AppState

log = logging.getLogger(__name__)
SWEEP_LOCK = 0x63705F737765  # "cp_swe": one sweep at a time, whoever runs it
LEADER_LOCK = 0x63705F737770  # "cp_swp": the replica that sweeps periodically
PAGE = 1000  # live digests read from the registry at a time
MAX_VERIFIED = 1000  # digests the listing lacked that are checked again (the rest are counted as they are)
MAX_REPORTED = 100  # versions named in a report, digests named in its audit event
LEFTOVER_MIN_AGE = timedelta(hours=24)  # an upload's temp object is never younger than this when removed
SYSTEM = Principal(role=Role.ADMIN, tenant_id=None, key_id=None, label="system:artifact-sweep")


class SweepBusy(Conflict):
    """Another sweep is under way (in this process or another replica)."""


class SweepFailed(AppError):
    """The registry's order of digests is not the store's (a collation that is not bytewise)."""

    status_code = 500
    kind = "SweepFailed"


class SweepInterrupted(ServiceUnavailable):
    """The sweep stopped before its end: the process is stopping, or it lost its lock."""


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
    deleted_digests: list[str] = field(default_factory=list)  # the first MAX_REPORTED (audited, not answered)


class SweepMetrics:
    """The sweep's figures on /metrics (this process's sweeps)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sweeps = Counter(
            "cp_artifact_sweeps", "Artifact garbage sweeps run here, by result", ["result"], registry=registry
        )
        for result in ("ok", "failed"):  # exported from the start: `increase()` misses a series' first step
            self.sweeps.labels(result=result)
        self.deleted = Counter(
            "cp_artifacts_swept", "Artifacts the sweep deleted (no live version used them)", registry=registry
        )
        self.deleted_bytes = Counter(
            "cp_artifact_swept_bytes", "Bytes of the artifacts the sweep deleted", registry=registry
        )
        self.missing = Gauge(
            "cp_artifacts_missing",
            "Artifacts live versions use that the store lacked at this process's last complete sweep",
            registry=registry,
        )
        self.last_success = Gauge(
            "cp_artifact_sweep_last_success_timestamp_seconds",
            "When this process's last sweep ended well (0: none yet)",
            registry=registry,
        )


class ArtifactSweeper:
    """Runs sweeps: on request, and every `interval_s` on the replica holding the lease (0: never)."""

    def __init__(
        self, state: AppState, *, interval_s: float, grace_s: float, lock_timeout_s: float = 10.0
    ) -> None:
        self.state = state
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.lock_timeout_s = lock_timeout_s
        self.metrics = SweepMetrics(state.metrics.registry)
        self._local = threading.Lock()
        lease = LeaderLease(state.settings.database_url, LEADER_LOCK, timeout_s=lock_timeout_s)
        self.loop = LeaderLoop(self._periodic, name="cp-artifact-sweep", interval_s=interval_s, lease=lease)

    def start(self) -> None:
        """Sweep every `interval_s` from now on (the first one an interval from now)."""
        if self.interval_s > 0:
            self.loop.start()

    def stop(self) -> None:
        """Stop sweeping; a sweep under way ends at its next artifact."""
        self.loop.stop()

    def sweep(
        self,
        *,
        grace_s: float | None = None,
        dry_run: bool = False,
        actor: Principal = SYSTEM,
        request_id: str | None = None,
    ) -> SweepReport:
        """Sweep now (SweepBusy if one is under way anywhere), audited as `actor`'s, failed or not."""
        grace = self.grace_s if grace_s is None else grace_s
        report = SweepReport(dry_run=dry_run, grace_s=grace, started_at=datetime.now(UTC))
        started = time.monotonic()
        with self._exclusive() as still_held:
            try:
                artifact_guard.claim_store(self.state, mark=not dry_run)
                _sweep(self.state, report, stop=self.loop.stopping, held=still_held, metrics=self.metrics)
            except Exception as exc:
                report.seconds = time.monotonic() - started
                self.metrics.sweeps.labels(result="failed").inc()
                self._audit(report, actor, request_id, error=exc)
                raise
        report.seconds = time.monotonic() - started
        self.metrics.sweeps.labels(result="ok").inc()
        self.metrics.missing.set(report.missing)
        self.metrics.last_success.set_to_current_time()
        self._audit(report, actor, request_id, error=None)
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

    def _audit(
        self, report: SweepReport, actor: Principal, request_id: str | None, *, error: Exception | None
    ) -> None:
        figures: dict[str, Any] = asdict(report)
        figures.pop("missing_versions")
        figures["started_at"] = report.started_at.isoformat()
        if error is not None:
            figures["error"] = error.message if isinstance(error, AppError) else type(error).__name__
        try:
            with transaction(self.state.internal_session_factory) as session:
                audit.record(
                    session,
                    actor=actor,
                    action="artifacts.sweep",
                    target="artifacts",
                    after=figures,
                    outcome="success" if error is None else "failure",
                    request_id=request_id,
                )
        except Exception:
            log.exception("the artifact sweep's audit event could not be written: %s", figures)

    @contextmanager
    def _exclusive(self) -> Iterator[LeaderLease]:
        """This process's lock, then the replicas' (on a connection of its own, with keepalives)."""
        if not self._local.acquire(blocking=False):
            raise SweepBusy("an artifact sweep is under way in this process; try again when it is done")
        lock = LeaderLease(self.state.settings.database_url, SWEEP_LOCK, timeout_s=self.lock_timeout_s)
        try:
            if not lock.acquire():
                raise SweepBusy(
                    "an artifact sweep is under way on another replica (or the database did not answer); "
                    "try again later"
                )
            yield lock
        finally:
            lock.release()  # closing its connection lets the lock go, whatever became of it
            self._local.release()

    def _periodic(self) -> None:
        try:
            self.sweep()
        except SweepBusy:
            log.info("artifact sweep skipped: another is under way")


def _sweep(
    state: AppState, report: SweepReport, *, stop: threading.Event, held: LeaderLease, metrics: SweepMetrics
) -> None:
    cutoff = report.started_at - timedelta(seconds=report.grace_s)
    with state.internal_session_factory() as session:
        horizon = repository.last_version_id(session)  # versions above it may have stored after the listing
    absent: list[str] = []  # live digests the listing lacked (the first MAX_VERIFIED of them)
    for stored, live in _merged(state.artifacts.listing(), _live_digests(state)):
        if stop.is_set():
            raise SweepInterrupted("the process is stopping: the sweep ended early", retry_after=5)
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
        elif report.dry_run:
            continue
        elif not held.held():
            raise SweepInterrupted("the sweep lost its lock (its connection); it stopped", retry_after=5)
        elif artifact_guard.drop_if_unused(state, stored.sha256, claimed=True):
            report.deleted += 1
            report.deleted_bytes += stored.size_bytes
            metrics.deleted.inc()
            metrics.deleted_bytes.inc(stored.size_bytes)
            if len(report.deleted_digests) < MAX_REPORTED:
                report.deleted_digests.append(stored.sha256)
        else:
            report.taken += 1
    if not report.dry_run:
        report.leftovers_removed = state.artifacts.remove_leftovers(
            min(cutoff, report.started_at - LEFTOVER_MIN_AGE)
        )
    _report_missing(state, report, absent, horizon)


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


def _report_missing(state: AppState, report: SweepReport, absent: list[str], horizon: int) -> None:
    """Of the digests the listing lacked, those of versions registered since the sweep began (ids above
    `horizon`) may have been stored after the listing passed them: those are looked up again. A version
    registered before stored its artifact before, so before the listing began. Some missing ones'
    versions are named."""
    if not absent:
        return
    with state.internal_session_factory() as session:
        recent = repository.digests_registered_after(session, digests=absent, version_id=horizon)
    stored_since = [sha256 for sha256 in recent if state.artifacts.exists(sha256)]
    report.missing -= len(stored_since)
    missing = sorted(set(absent) - set(stored_since))[:MAX_REPORTED]
    if missing:
        with state.internal_session_factory() as session:
            rows = repository.live_versions_of(session, digests=missing, limit=MAX_REPORTED)
        report.missing_versions = [MissingArtifact(*row) for row in rows]
