"""What the reconcile loop does to one instance: loads, unloads and the observed state it records.

Loads run on a small worker pool per instance (one slow Triton never holds up another), unloads and
evictions on another (an eviction waits for the memory to come back, a second or more for a Python
backend, and must not hold up the loads it makes room for); all are single-flight per (instance,
version), holding the loader's per-model lock; a failed load backs off. A version that is still
served elsewhere is unloaded make-before-break: only once it is ready on another instance that should
hold it, marked `unloading` first (routes stop sending it there) and unloaded `unload_grace_s` later,
so requests already on their way still find it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.session import transaction
from control_plane.errors import AppError
from control_plane.fleet import repository
from control_plane.fleet.backoff import Backoff
from control_plane.fleet.desired import Desired
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.loader import VersionLoader
from control_plane.fleet.observed import InstanceObservation, Observed, PlacementFailure
from control_plane.residency import repository as residency_repository
from control_plane.tritonserver.exceptions import TritonLoadTimeout

log = logging.getLogger(__name__)
# Version states that should not be loaded anywhere (a failed version is not served either; a version
# being loaded, `registered` or `loading`, is the loader's business).
RELEASED = ("unloaded", "retired", "failed")
EVICTION_WAIT_S = 60.0  # how long a load waits for the evictions making its room (then the next pass)
LOAD_STALL_S = 30.0  # a load calling Triton longer holds no load worker (`Actions.stalled_on`)
Key = tuple[str, int]  # (instance name, version id)
Note = tuple[int, str, str | None]  # (version id, observed state, message)


@dataclass(frozen=True, slots=True)
class BeforeUnload:
    """What an eviction's unload starts from: Triton's own bytes and the version's, and whether the
    version's processes were ended already (its memory is back before the unload)."""

    triton_bytes: int
    version_bytes: int
    freed: bool = False


class ResidencyHooks:
    """What residency (issue 12) adds to loads and unloads; the default does nothing."""

    def eviction_grace_s(self, name: str, last_used: float) -> float:
        """How long routes stop sending to a version before its eviction's unload (`last_used`: its last
        use, wall-clock seconds, as the pass that chose it saw it)."""
        return 0.0

    def loaded(self, endpoint: TritonEndpoint, name: str, version_id: int, seconds: float) -> None:
        """A load finished: measure the version's memory."""

    def load_failed(self, version_id: int, message: str) -> None:
        """A load failed."""

    def load_timed_out(self, endpoint: TritonEndpoint, name: str) -> None:
        """A load ran past its timeout while Triton may still be at it: it may end the version's
        processes (residency's `end_stubs`), so that Triton's load fails and gives its memory back."""

    def loading(self, delta: int) -> None:
        """A load call to Triton started (+1) or ended (-1)."""

    def busy(self, name: str) -> bool:
        """Whether requests to `name` are in flight (never evict it then)."""
        return False

    def before_unload(self, endpoint: TritonEndpoint, name: str) -> BeforeUnload | None:
        """Right before an eviction's unload: Triton's own and the version's bytes, None if they cannot be
        measured; it may also end the version's processes (residency's `end_stubs`)."""
        return None

    def evicted(
        self, endpoint: TritonEndpoint, name: str, version_id: int, before: BeforeUnload | None, reason: str
    ) -> None:
        """An eviction finished (`reason`: why the pass chose it): check the memory came back, run the loop
        again."""

    def unloaded(self, endpoint: TritonEndpoint, name: str) -> None:
        """A version released in the registry or moved away was unloaded (not an eviction)."""


class Actions:
    """Loads and unloads on the fleet for the reconcile loop, and the placement states they leave."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session],
        loader: VersionLoader,
        observed: Observed,
        backoff: Backoff,
        loads_per_instance: int,
        unload_grace_s: float,
        unloads_per_instance: int = 8,
        load_limits: Mapping[str, int] | None = None,
        on_load_done: Callable[[bool], None] | None = None,
        rerun: Callable[[], None] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.loader = loader
        self.observed = observed
        self.backoff = backoff
        self.unload_grace_s = unload_grace_s
        self._loads_per_instance = loads_per_instance
        self._load_limits = dict(load_limits or {})  # instance name -> its own loads at once
        self._unloads_per_instance = unloads_per_instance
        self._on_load_done = on_load_done  # a load worker came free (and whether the version loaded)
        self._rerun = rerun  # run the loop again: a load planned for room that was not made
        self._workers: dict[tuple[str, bool], ThreadPoolExecutor] = {}  # (instance, loads?) -> pool
        self._inflight: dict[Key, Future[bool | None]] = {}
        self._loads: set[Key] = set()  # keys of _inflight that are loads
        # Evictions in flight -> whether their version's memory is back (set as soon as it is, which
        # with residency's `end_stubs` is before Triton's unload returns; False if it was kept).
        self._rooms: dict[Key, Future[bool]] = {}
        self._loaded_at: dict[Key, float] = {}  # when each load last succeeded (time.monotonic())
        self._load_started: dict[Key, float] = {}  # loads calling Triton now: since (time.monotonic())
        # A load calling Triton longer than this is stalled (`stalled_on`; CP_TRITON_LOAD_STALL_S).
        self.stall_s = LOAD_STALL_S
        # Evictions a pass planned while another action on the same version was still running (one that
        # kept it, say): started when that one ends. Dropped, the pass's placement (desired absent) was
        # left with nothing to unload the version, and later passes counted it as leaving forever.
        self._deferred: dict[Key, tuple[TritonEndpoint, str, _Action, Future[bool]]] = {}
        self.residency: ResidencyHooks = ResidencyHooks()
        self._lock = threading.Lock()
        # instance -> its placements' writes, in order
        self._note_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._stopped = False

    def converge(
        self,
        endpoint: TritonEndpoint,
        seen: InstanceObservation,
        desired: Desired,
        ours: dict[str, tuple[int, str]],
        fleet: dict[str, InstanceObservation],
    ) -> int:
        """Start what makes `endpoint` match its desired placements; the drift found (placements
        missing, or loaded and not desired)."""
        want = desired.on.get(endpoint.name, {})
        notes: list[Note] = []
        missing: list[tuple[str, int]] = []
        leaving = self.unloading_on(endpoint.name)
        for name, version_id in want.items():
            state = seen.models.get(name)
            # Asked for again while its eviction runs: Triton may still list it ready after the eviction
            # ended its processes, so it is not shown ready (a request would find no stub); the eviction's
            # end runs the loop again, which loads it back.
            if state in ("READY", "LOADING") and version_id not in leaving:
                notes.append((version_id, "ready" if state == "READY" else "loading", None))
                continue
            if self.observed.placement_state((endpoint.name, version_id)) in ("ready", None):
                notes.append((version_id, "loading", None))  # not there (any more): routes skip it
            missing.append((name, version_id))
        for name, version_id in desired.recorded.get(endpoint.name, {}).items():
            if name not in want and seen.models.get(name) != "READY":
                notes.append((version_id, "unloaded", None))  # gone (a restart), and not wanted here
        # All from the probe: a placement a load or an unload has recorded since keeps what that said.
        self.note_many(endpoint.name, notes, unless_since=seen.probed_at)
        for name, version_id in missing:
            if self.loaded_since((endpoint.name, version_id), seen.probed_at):
                continue  # loaded after the probe this pass looks at: not missing (a load now reloads it)
            load = partial(self._load, since=seen.probed_at)  # skipped if kept or loaded since the probe
            self._schedule(endpoint, name, version_id, load, load=True)
        extra = 0
        for name, state in seen.models.items():
            found = ours.get(name)
            if state != "READY" or name in want or found is None:
                continue  # not loaded, desired here, or not ours: never touched
            version_id, version_state = found
            if version_state in RELEASED:
                extra += 1
                self._schedule(endpoint, name, version_id, self._unload_released)
            elif version_state == "ready":
                extra += 1
                if _ready_elsewhere(endpoint.name, name, desired.holders.get(version_id, ()), fleet):
                    self._schedule(endpoint, name, version_id, self._unload_moved)
        return len(missing) + extra

    def evict(
        self,
        endpoint: TritonEndpoint,
        name: str,
        version_id: int,
        *,
        last_used: float = 0.0,
        reason: str = "lru",
    ) -> None:
        """Unload a version the residency budget no longer holds (unless requests are in flight)."""
        room: Future[bool] = Future()
        action = partial(self._evict, last_used=last_used, room=room, reason=reason)
        self._schedule(endpoint, name, version_id, action, room=room, defer=True)

    def load_after(self, endpoint: TritonEndpoint, loads: list[tuple[str, int]], victims: list[int]) -> None:
        """Start loads that wait for room as soon as the evictions making it have given back their
        versions' memory, instead of at the next pass: each runs on a load worker (so the loop counts it
        as loading) that gets ready meanwhile and loads only if every one of them did; otherwise the
        next pass decides again."""
        with self._lock:
            rooms = [self._rooms.get((endpoint.name, v)) for v in victims]
        if not loads:
            return
        if not rooms or any(r is None for r in rooms):
            self._again()  # an eviction over already, or not started: the next pass decides
            return
        waits = [r for r in rooms if r is not None]
        for name, version_id in loads:
            self._schedule(endpoint, name, version_id, partial(self._load_after, rooms=waits), load=True)

    def load_slots(self, instance: str) -> int:
        """How many loads run at once on `instance`."""
        return self._load_limits.get(instance, self._loads_per_instance)

    def stalled_on(self, instance: str) -> set[int]:
        """Versions whose load has been calling Triton on `instance` for longer than `stall_s` (an
        `initialize()` that hangs, say, until the load timeout): they hold no load worker for the budget
        step (`Budgets`), so other versions' loads start beside them (the pool has room for as many)."""
        since = time.monotonic() - self.stall_s
        with self._lock:
            return {k[1] for k, at in self._load_started.items() if k[0] == instance and at < since}

    def may_load(self, instance: str, version_id: int) -> bool:
        """Whether a load of the version on `instance` may be tried now (not backing off after failures)."""
        return self.backoff.due((instance, version_id))

    def loading_on(self, instance: str, *, since: float | None = None) -> set[int]:
        """Versions with a load queued or running on `instance` (and, with `since`, those whose load
        succeeded after that moment: a probe taken before does not show them yet)."""
        with self._lock:
            found = {key[1] for key in self._loads if key[0] == instance}
            if since:
                found |= {k[1] for k, at in self._loaded_at.items() if k[0] == instance and at >= since}
            return found

    def loaded_since(self, key: Key, since: float) -> bool:
        """Whether the version's load on the instance succeeded at or after `since` (time.monotonic();
        0: unknown, never)."""
        return since > 0 and self._loaded_at.get(key, float("-inf")) >= since

    def unloading_on(self, instance: str) -> set[int]:
        """Versions with an unload or eviction queued or running on `instance` (still holding memory)."""
        with self._lock:
            return {key[1] for key in self._inflight if key[0] == instance and key not in self._loads}

    def busy(self, instance: str) -> bool:
        """Whether a load or unload on `instance` is queued or running."""
        with self._lock:
            return any(key[0] == instance for key in self._inflight)

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no load or unload is queued or running, its bookkeeping done (an action's future
        is done before its `_forget` runs, which may start an eviction deferred behind it); False on
        timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                pending = list(self._inflight.values())
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                return not pending
            if wait(pending, timeout=left).not_done:
                return False
            time.sleep(0.001)  # done, its `_forget` about to run

    def stop(self) -> None:
        """Drop queued work (running loads end with the Triton or their timeout)."""
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        for pool in workers:
            pool.shutdown(wait=False, cancel_futures=True)

    def _schedule(
        self,
        endpoint: TritonEndpoint,
        name: str,
        version_id: int,
        action: _Action,
        *,
        load: bool = False,
        room: Future[bool] | None = None,
        defer: bool = False,
    ) -> None:
        key = (endpoint.name, version_id)
        with self._lock:
            if key in self._inflight and defer and room is not None and not self._stopped:
                self._deferred[key] = (endpoint, name, action, room)  # after the one running (`_forget`)
                return
            if key in self._inflight or self._stopped or (load and not self.backoff.due(key)):
                return
            task = self._submit(endpoint, name, version_id, action, load=load, room=room)
        task.add_done_callback(lambda _: self._forget(key, task))

    def _submit(
        self,
        endpoint: TritonEndpoint,
        name: str,
        version_id: int,
        action: _Action,
        *,
        load: bool,
        room: Future[bool] | None,
    ) -> Future[bool | None]:
        """Start an action on the instance's workers (`_lock` held); its `_forget` is the caller's."""
        pool = self._workers.get((endpoint.name, load))
        if pool is None:
            pool = self._workers[(endpoint.name, load)] = ThreadPoolExecutor(
                max_workers=2 * self.load_slots(endpoint.name) if load else self._unloads_per_instance,
                thread_name_prefix=f"cp-{'load' if load else 'unload'}-{endpoint.name}",
            )
        task = pool.submit(action, endpoint, name, version_id)
        key = (endpoint.name, version_id)
        self._inflight[key] = task
        if load:
            self._loads.add(key)
        if room is not None:
            self._rooms[key] = room
        return task

    def _forget(self, key: Key, task: Future[bool | None]) -> None:
        with self._lock:
            if self._inflight.get(key) is not task:
                return
            del self._inflight[key]
            was_load = key in self._loads
            self._loads.discard(key)
            room = self._rooms.pop(key, None)
            deferred = self._deferred.pop(key, None)
            follow = None  # started before the lock is let go: `wait_idle` sees one or the other
            if deferred is not None and not self._stopped:
                endpoint, name, action, its_room = deferred
                follow = self._submit(endpoint, name, key[1], action, load=False, room=its_room)
        if follow is not None:
            follow.add_done_callback(lambda _: self._forget(key, follow))
        if room is not None and not room.done():
            room.set_result(False)  # the eviction failed or was dropped: its room was never made
        if was_load and self._on_load_done is not None:
            self._on_load_done(not task.cancelled() and task.exception() is None and task.result() is True)

    def _load(
        self,
        endpoint: TritonEndpoint,
        name: str,
        version_id: int,
        *,
        written: bool = False,
        since: float = 0.0,
    ) -> bool:
        """Load a version on an instance (`written`: its repository entry was just written for it);
        whether it loaded. One loaded since `since` (the probe of the pass that found it missing), or
        kept loaded by an eviction that did not happen, is not loaded again: Triton would reload it, a
        second stub beside the first, over the budget for a moment."""
        key = (endpoint.name, version_id)
        with self.loader.lock_for(name):
            if self.loaded_since(key, since):
                return True
            if self._version_state(version_id) != "ready":
                return False
            self.note_many(endpoint.name, [(version_id, "loading", None)])
            try:
                if not written:
                    self._write_entry(endpoint, name, version_id)
                started = time.monotonic()
                with self._lock:
                    self._load_started[key] = started
                self.residency.loading(1)
                try:
                    endpoint.client.load_model(name)
                finally:
                    self.residency.loading(-1)
                    with self._lock:
                        del self._load_started[key]
                seconds = time.monotonic() - started
            except Exception as exc:  # any failure backs off; the loop must not die
                if isinstance(exc, TritonLoadTimeout):
                    self._abandon_load(endpoint, name)
                self._failed(endpoint.name, name, version_id, getattr(exc, "message", None) or repr(exc))
                return False
            # Recorded under the version's lock too: a retire or an unload waiting for it (a version
            # deleted, its tenant with it, while it loaded) then comes after, and its `unloaded` is the
            # last word, not this `ready` written over it (a review saw such placements stay `ready` for
            # over 40 s, the version listed as resident, after Triton had unloaded it).
            with self._lock:
                self._loaded_at[key] = time.monotonic()
            self.backoff.succeeded(key)
            self.observed.stats.loaded(endpoint.name, ok=True)
            try:
                self.residency.loaded(endpoint, name, version_id, seconds)
            except Exception:  # a measurement never fails the load
                log.exception("measuring %s on %s failed", name, endpoint.name)
            self.note_many(endpoint.name, [(version_id, "ready", None)])
        log.info("reconciler loaded %s on %s", name, endpoint.name)
        return True

    def _abandon_load(self, endpoint: TritonEndpoint, name: str) -> None:
        """A load past its timeout is failed here; Triton's must not go on holding memory and a load
        thread (a model's `initialize()` that never returns held them until Triton restarted, and the
        budget waited for that memory to leave)."""
        try:
            self.residency.load_timed_out(endpoint, name)
        except Exception:
            log.exception("ending the timed-out load of %s on %s failed", name, endpoint.name)

    def _load_after(
        self, endpoint: TritonEndpoint, name: str, version_id: int, *, rooms: list[Future[bool]]
    ) -> bool:
        """`_load` once the evictions making its room have given back their versions' memory (see
        `load_after`). Meanwhile it gets ready (disk and registry, not memory): the version's state is
        checked, its placement shown loading, its repository entry written."""
        written = False
        try:
            with self.loader.lock_for(name):
                if self._version_state(version_id) != "ready":
                    return False
                self.note_many(endpoint.name, [(version_id, "loading", None)])
                self._write_entry(endpoint, name, version_id)
            written = True
        except Exception as exc:  # `_load` tries again, and records a failure there
            log.info("getting %s ready ahead of its load failed: %r", name, exc)
        done, pending = wait(rooms, timeout=EVICTION_WAIT_S)
        if pending or not all(not r.cancelled() and r.result() for r in done):
            self.note_many(endpoint.name, [(version_id, "unloaded", None)])  # not loading after all
            self._again()
            return False
        return self._load(endpoint, name, version_id, written=written)

    def _again(self) -> None:
        if self._rerun is not None:
            self._rerun()

    def _write_entry(self, endpoint: TritonEndpoint, name: str, version_id: int) -> None:
        """The version's repository entry, under its lock: a first attempt trusts one already there
        (without reading the registry), a retry rewrites it."""
        if self.backoff.failures((endpoint.name, version_id)) == 0 and self.loader.repository.has_model(name):
            return
        self.loader.write_entry(version_id)

    def _unload_released(self, endpoint: TritonEndpoint, name: str, version_id: int) -> None:
        with self.loader.lock_for(name):
            if self._version_state(version_id) not in RELEASED:
                return
            if not self._unload(endpoint, name, version_id, why="released in the registry"):
                return
        self.residency.unloaded(endpoint, name)

    def _unload_moved(self, endpoint: TritonEndpoint, name: str, version_id: int) -> None:
        """Make-before-break: stop routing here, wait for requests on their way, then unload."""
        with self.loader.lock_for(name):
            if self._wanted_here(endpoint.name, version_id):
                return
            self.note_many(endpoint.name, [(version_id, "unloading", None)])
        time.sleep(self.unload_grace_s)
        with self.loader.lock_for(name):
            if self._wanted_here(endpoint.name, version_id):
                return
            if not self._unload(endpoint, name, version_id, why="placed elsewhere"):
                return
        self.residency.unloaded(endpoint, name)

    def _evict(
        self,
        endpoint: TritonEndpoint,
        name: str,
        version_id: int,
        *,
        last_used: float = 0.0,
        room: Future[bool] | None = None,
        reason: str = "lru",
    ) -> bool:
        """Give requests on their way a moment (the pass that chose the version showed it unloading, so
        routes no longer send to it), then unload unless one is in flight or it was asked for again
        meanwhile; whether it was unloaded. `room` is set as soon as the version's memory is back
        (before the unload when the residency hooks ended its processes), so a load waiting for it
        starts alongside the unload."""
        hooks = self.residency
        grace = hooks.eviction_grace_s(name, last_used)
        if grace > 0:
            time.sleep(grace)
        with self.loader.lock_for(name):
            # The registry first: a request that found the version resident a moment ago is counted in
            # flight by the time it answers.
            if self._kept_from_eviction(endpoint.name, version_id) or hooks.busy(name):
                self._keep(endpoint.name, version_id)
                return False
            before = hooks.before_unload(endpoint, name)
            if room is not None and before is not None and before.freed:
                room.set_result(True)
            if not self._unload(endpoint, name, version_id, why="evicted for the memory budget"):
                self._keep(endpoint.name, version_id)
                return False
        if room is not None and not room.done():
            room.set_result(True)
        hooks.evicted(endpoint, name, version_id, before, reason)
        return True

    def _keep(self, instance: str, version_id: int) -> None:
        """An eviction that did not happen: the placement is desired and ready again (and the version
        counts as loaded now: a load a pass started meanwhile does not load it again)."""
        with self._lock:
            self._loaded_at[(instance, version_id)] = time.monotonic()
        with transaction(self.session_factory) as session:
            repository.keep_placement(session, instance=instance, version_id=version_id)
        self.note_many(instance, [(version_id, "ready", None)])

    def _unload(self, endpoint: TritonEndpoint, name: str, version_id: int, *, why: str) -> bool:
        try:
            endpoint.client.unload_model(name)
        except AppError as exc:
            log.warning("reconciler could not unload %s from %s: %s", name, endpoint.name, exc.message)
            return False
        self.observed.stats.unloaded(endpoint.name)
        self.note_many(endpoint.name, [(version_id, "unloaded", None)])
        log.info("reconciler unloaded %s from %s (%s)", name, endpoint.name, why)
        return True

    def _failed(self, instance: str, name: str, version_id: int, message: str) -> None:
        delay = self.backoff.failed((instance, version_id))
        self.observed.failures[(instance, version_id)] = PlacementFailure(
            instance=instance, triton_name=name, message=message[:2000], retry_in_s=delay
        )
        self.observed.stats.loaded(instance, ok=False)
        self.note_many(instance, [(version_id, "failed", message[:2000])])
        try:
            self.residency.load_failed(version_id, message[:2000])
        except Exception:
            log.exception("recording the failed load of %s failed", name)
        log.warning("loading %s on %s failed (next try in %.0fs): %s", name, instance, delay, message)

    def _version_state(self, version_id: int) -> str | None:
        with self.session_factory() as session:
            return repository.version_state(session, version_id)

    def _wanted_here(self, instance: str, version_id: int) -> bool:
        """Whether the version should stay on `instance` (desired there, or no longer ours to move)."""
        with self.session_factory() as session:
            return repository.wanted_on(session, instance=instance, version_id=version_id)

    def _kept_from_eviction(self, instance: str, version_id: int) -> bool:
        """Whether an eviction chosen by a pass should keep the version after all: wanted here again, or
        pinned since (the pass read the pins before the pin committed)."""
        with self.session_factory() as session:
            return repository.wanted_on(
                session, instance=instance, version_id=version_id
            ) or residency_repository.is_pinned(session, version_id)

    def note_many(self, instance: str, notes: list[Note], *, unless_since: float = 0.0) -> None:
        """Record placements' observed states (those that changed since this process last wrote them).
        With `unless_since` (a pass's probe): not those recorded since, by a load or an unload ending
        after the probe (a pass wrote loading over a load that had just recorded ready, and routes
        skipped a servable version until the next pass: one load in eight under the Zipf benchmark).
        One instance's writes go one at a time, so what is remembered here is what the registry says."""
        with self._lock:
            lock = self._note_locks[instance]
        with lock:
            if unless_since > 0:
                recorded = self.observed.placement_recorded_since
                notes = [n for n in notes if not recorded((instance, n[0]), unless_since)]
            for version_id, state, _ in notes:
                if state != "failed":
                    self.observed.failures.pop((instance, version_id), None)
            changed = [n for n in notes if self.observed.placement_changed((instance, n[0]), n[1], n[2])]
            if changed:
                self._record(instance, changed)

    def _record(self, instance: str, notes: list[Note]) -> None:
        """Write placements' observed states to the registry."""
        now = datetime.now(UTC)
        with transaction(self.session_factory) as session:
            ids = repository.instance_ids(session, [instance])
            if instance not in ids:
                return
            for version_id, state, message in notes:
                repository.upsert_placement(
                    session,
                    instance_id=ids[instance],
                    version_id=version_id,
                    state=state,
                    message=message,
                    now=now,
                )


def _ready_elsewhere(
    instance: str, name: str, holders: frozenset[str] | tuple[()], fleet: dict[str, InstanceObservation]
) -> bool:
    """Whether `name` is ready on another instance that should hold it."""
    for holder in holders:
        seen = fleet.get(holder)
        if holder != instance and seen is not None and seen.ready and seen.models.get(name) == "READY":
            return True
    return False


_Action = Callable[[TritonEndpoint, str, int], bool | None]  # a bound method of Actions
