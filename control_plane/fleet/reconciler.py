"""The reconcile loop: every Triton instance serves what the registry's desired placements say.

Each pass probes every instance of this process's view (health and repository index, short
timeouts, in parallel), then, for the instances this process acts on (all of them when it holds
the leader lock, else only its own embedded Triton), runs the placement policy (`desired.py`:
`replicas` instances per model, spread, sticky; moved off instances that are draining or gone for
`move_after_s`), loads what a desired placement lacks (repository entry first; single-flight per
version and instance; failures back off), unloads what is ours and not desired there (a version
still served only once it is ready elsewhere; never a model that is not ours), records observed
state, drift and errors, and removes drained instances.

Passes run at start-up, on every change notification and data-plane failure (`trigger`), and every
`interval_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import ModelVersion, TritonInstance
from control_plane.db.session import transaction
from control_plane.errors import AppError
from control_plane.fleet import repository
from control_plane.fleet.actions import Actions
from control_plane.fleet.backoff import Backoff
from control_plane.fleet.desired import Desired, apply_policy, place_version
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.leader import LeaderLease
from control_plane.fleet.loader import VersionLoader
from control_plane.fleet.members import Connect, Members
from control_plane.fleet.observed import InstanceObservation, Observed
from control_plane.fleet.placement import Slot
from control_plane.routing.changes import mark_routing_changed

if TYPE_CHECKING:
    from control_plane.residency.budget import Budgets

log = logging.getLogger(__name__)
RECONCILE_LOCK = 0x63705F726563  # "cp_rec"
PassListener = Callable[[dict[str, InstanceObservation]], None]


class Reconciler:
    """One loop that makes each Triton match the desired placements (see the module docstring)."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        loader: VersionLoader,
        tritons: list[TritonEndpoint],
        database_url: str,
        interval_s: float,
        local: Collection[str] = (),
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        loads_per_instance: int = 2,
        load_limits: Mapping[str, int] | None = None,
        default_replicas: int = 1,
        move_after_s: float = 30.0,
        unload_grace_s: float = 1.0,
        own: Collection[str] | None = None,
        connect: Connect | None = None,
        lock_timeout_s: float = 10.0,
    ) -> None:
        self.session_factory = session_factory
        self.tritons = tritons  # shared with the data plane; kept matching the registry by `members`
        self.members = Members(tritons, own=own, connect=connect, fixed=local)
        self.interval_s = interval_s
        self.local = frozenset(local)
        self.default_replicas = default_replicas
        self.move_after_s = move_after_s
        self.observed = Observed()
        self.after_pass: list[PassListener] = []
        self.budgets: Budgets | None = None  # residency (issue 12): memory budgets per instance
        self._lease = LeaderLease(database_url, RECONCILE_LOCK, timeout_s=lock_timeout_s)
        self.actions = Actions(
            session_factory=session_factory,
            loader=loader,
            observed=self.observed,
            backoff=Backoff(initial_s=backoff_s, max_s=backoff_max_s),
            loads_per_instance=loads_per_instance,
            load_limits=load_limits,
            unload_grace_s=unload_grace_s,
            on_load_done=self._load_done,
            rerun=self.trigger,
        )
        self._probes = ThreadPoolExecutor(max_workers=8, thread_name_prefix="cp-reconcile")
        self._down_since: dict[str, float] = {}
        self._health_recorded: tuple[list[repository.Health], float] = ([], 0.0)  # what, when
        self._pass_lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="cp-reconciler", daemon=True)
        loader.placer = self.place
        loader.observed = self.observed

    def start(self, *, wait_s: float) -> None:
        """Reconcile once now (waiting up to `wait_s` for its loads), then every `interval_s`."""
        self.run_pass(wait_s=wait_s)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and drop queued loads, give up leadership; running loads are not waited for
        (stopping the embedded Triton next ends them; a remote one's end within its load timeout)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self._probes.shutdown(wait=True, cancel_futures=True)
        self.actions.stop()
        self._lease.release()

    def trigger(self) -> None:
        """Run a pass now (a change notification, a Triton restart or failure) instead of at the period."""
        self._wake.set()

    def freed(self, *, room: bool = False, worker: bool = False) -> None:
        """An evicted version's memory (`room`) or a load worker came free: run a pass now if the last one
        held a version back for it (see `Budgets.held_for_room`); else the next change or the period will
        do. A pass after every load and eviction was two of a quiet cold start's three, the last beside
        the version's first inference, and under a burst of cold loads the passes after evictions planned
        nothing (what waits there waits for a load worker; the loads planned for that room start alone)."""
        budgets = self.budgets
        if budgets is None or (room and budgets.held_for_room) or (worker and budgets.held_for_worker):
            self.trigger()

    def measured(self, instance: str, version_id: int, size: int) -> None:
        """A version just loaded was measured: run a pass now if it is bigger than the last pass counted
        and the instance's plan no longer fits its budget (`Budgets.overflows`)."""
        if self.budgets is not None and self.budgets.overflows(instance, version_id, size):
            self.trigger()

    def _load_done(self, loaded: bool) -> None:
        """A load worker came free; a load that did not happen (failed, dropped) gives back the room
        the pass planned for it too."""
        self.freed(worker=True, room=not loaded)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no load or unload started by this loop is running; False on timeout."""
        return self.actions.wait_idle(timeout_s)

    def run_pass(self, *, wait_s: float = 0.0) -> dict[str, InstanceObservation]:
        """One pass over this process's view, acting on all of it when leader, else on its own."""
        leader = self._lease.acquire()
        self.observed.leader = self.observed.stats.leader = leader
        with self.session_factory() as session:
            self.members.sync(repository.instance_rows(session))
        endpoints = list(self.tritons)
        acting = [e.name for e in endpoints if leader or e.name in self.local]
        return self.reconcile(endpoints, acting=acting, wait_s=wait_s)

    def reconcile(
        self,
        endpoints: Sequence[TritonEndpoint],
        *,
        acting: Collection[str] | None = None,
        wait_s: float = 0.0,
    ) -> dict[str, InstanceObservation]:
        """Probe `endpoints` in parallel, converge those in `acting` (default: all); wait up to
        `wait_s` for the loads and unloads started."""
        with self._pass_lock:
            started = time.monotonic()
            probes = {e.name: self._probes.submit(_observe, e) for e in endpoints}
            seen = {name: probe.result() for name, probe in probes.items()}
            for observation in seen.values():
                self._remember(observation)
            names = {e.name for e in endpoints} if acting is None else set(acting)
            mine = [e for e in endpoints if e.name in names]
            if mine:
                self._act(mine, seen)
        if wait_s > 0:
            self.wait_idle(wait_s)
        self.observed.passed(datetime.now(UTC), time.monotonic() - started)
        for listener in self.after_pass:
            listener(seen)
        return seen

    def place(self, version_id: int) -> list[TritonEndpoint]:
        """Choose and record the instances a version should be loaded on now (for the loader).

        Instances the last pass saw ready come first; if none did (a probe that timed out while Triton
        was busy, or no pass yet), those not known to be gone are tried rather than refusing the load.
        """
        with transaction(self.session_factory) as session:
            return self.place_in(session, version_id)

    def place_in(self, session: Session, version_id: int) -> list[TritonEndpoint]:
        """`place` in the caller's transaction. The version's row is locked first, so placing it from
        several replicas at once gives one set of placements."""
        endpoints = list(self.tritons)
        session.get(ModelVersion, version_id, with_for_update={"key_share": True})
        rows = {r.name: r for r in repository.instance_rows(session)}
        known = [e.name for e in endpoints if e.name in rows]
        slots = [self._slot(rows[name], self.observed.instances.get(name)) for name in known]
        if not any(slot.eligible for slot in slots):
            slots = [Slot(s.name, eligible=s.keeps, keeps=s.keeps) for s in slots]
        chosen = place_version(
            session,
            version_id=version_id,
            instances={name: rows[name].id for name in known},
            slots=slots,
            default_replicas=self.default_replicas,
            now=datetime.now(UTC),
        )
        return [e for e in endpoints if e.name in chosen]

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_pass()
            except Exception:
                log.exception("reconcile pass failed; next one in %ss", self.interval_s)

    def _remember(self, observation: InstanceObservation) -> None:
        self.observed.instances[observation.name] = observation
        if observation.ready:
            self._down_since.pop(observation.name, None)
        else:
            self._down_since.setdefault(observation.name, observation.probed_at)

    def _slot(self, row: TritonInstance, seen: InstanceObservation | None) -> Slot:
        ready = seen is not None and seen.ready
        draining = row.draining_since is not None
        down_since = self._down_since.get(row.name)
        recent = down_since is not None and time.monotonic() - down_since < self.move_after_s
        keeps = not draining and (ready or recent or seen is None)  # never probed yet: not gone either
        return Slot(row.name, eligible=ready and not draining, keeps=keeps)

    def _act(self, mine: list[TritonEndpoint], seen: dict[str, InstanceObservation]) -> None:
        """Desired placements for these instances, then loads, unloads, health rows and drains."""
        now = datetime.now(UTC)
        with transaction(self.session_factory) as session:
            rows = {r.name: r for r in repository.instance_rows(session) if r.name in seen}
            mine = [e for e in mine if e.name in rows]
            desired = apply_policy(
                session,
                instances={e.name: rows[e.name].id for e in mine},
                slots=[self._slot(rows[e.name], seen[e.name]) for e in mine],
                default_replicas=self.default_replicas,
                now=now,
            )
            loaded = {n for e in mine for n, state in seen[e.name].models.items() if state in _PRESENT}
            ours = repository.versions_named(session, loaded)
            draining = {name for name, row in rows.items() if row.draining_since is not None}
            plans = {}
            if self.budgets is not None:  # may evict, and holds back loads that must wait for room
                plans = self.budgets.arrange(
                    session,
                    endpoints=mine,
                    rows=rows,
                    seen=seen,
                    desired=desired,
                    ours=ours,
                    # Loads that ended after the probe count as loaded (the index does not show them).
                    loading=lambda instance: self.actions.loading_on(
                        instance, since=seen[instance].probed_at
                    ),
                    unloading=self.actions.unloading_on,
                )
        for endpoint in mine:
            observation = seen[endpoint.name]
            drift = None
            if observation.ready:
                drift = self.actions.converge(endpoint, observation, desired, ours, seen)
                self.observed.drift[endpoint.name] = drift
                plan = plans.get(endpoint.name)
                if plan is not None:
                    for _, version_id in plan.after_evictions:  # what the pass wrote (`Budgets.arrange`)
                        self.observed.placement_changed((endpoint.name, version_id), "loading", None)
                    for name, version_id in plan.evict:
                        self.observed.placement_changed((endpoint.name, version_id), "unloading", None)
                        self.actions.evict(
                            endpoint,
                            name,
                            version_id,
                            last_used=plan.last_used.get(version_id, 0.0),
                            reason=plan.reasons.get(version_id, "lru"),
                        )
                    victims = [version_id for _, version_id in plan.evict]
                    self.actions.load_after(endpoint, plan.after_evictions, victims)
            self.observed.stats.observed(endpoint.name, ready=observation.ready, drift=drift)
        self._record_health(mine, seen, now)
        self._finish_drains(draining, seen, ours)

    def _record_health(
        self, mine: list[TritonEndpoint], seen: dict[str, InstanceObservation], now: datetime
    ) -> None:
        health = [
            repository.Health(
                e.name, seen[e.name].ready, None if seen[e.name].ready else seen[e.name].message
            )
            for e in mine
        ]
        # Passes come many a second under a burst of cold loads: the same health is written at most
        # once a second (the status page's "last pass" and "last seen" are that fine).
        if health == self._health_recorded[0] and time.monotonic() - self._health_recorded[1] < 1.0:
            return
        with transaction(self.session_factory) as session:
            if repository.mark_instances(session, health, now=now):
                mark_routing_changed(session)  # routes skip unavailable instances
        self._health_recorded = (health, time.monotonic())

    def _finish_drains(
        self, draining: set[str], seen: dict[str, InstanceObservation], ours: dict[str, tuple[int, str]]
    ) -> None:
        """Remove a draining instance once nothing of ours is loaded there (or it is gone)."""
        for name in draining:
            observation = seen[name]
            left = [n for n, state in observation.models.items() if state in _PRESENT and n in ours]
            if (observation.ready and left) or self.actions.busy(name):
                continue
            with transaction(self.session_factory) as session:
                repository.delete_instance(session, name)
                mark_routing_changed(session, desired=True)
            self.members.drop(name)
            self.observed.forget(name)
            log.warning("instance %s drained and removed from the fleet", name)


_PRESENT = ("READY", "LOADING")


def _observe(endpoint: TritonEndpoint) -> InstanceObservation:
    """Health and repository index of one instance (short timeouts)."""
    probed_at = time.monotonic()
    now = datetime.now(UTC)
    message: str | None = None
    try:
        ready = endpoint.health.is_ready()
        index = _index(endpoint) if ready else {}
    except AppError as exc:
        ready, index, message = False, {}, exc.message
    if not ready:
        message = message or "not ready"
    return InstanceObservation(
        endpoint.name, ready=ready, checked_at=now, models=index, message=message, probed_at=probed_at
    )


def _index(endpoint: TritonEndpoint) -> dict[str, str]:
    """Triton model name -> state, from the instance's repository index."""
    return {str(m["name"]): str(m.get("state") or "") for m in endpoint.health.repository_index()}


__all__ = ["Desired", "Reconciler"]
