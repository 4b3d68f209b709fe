"""On-demand loads for the data plane, and the loop's residency hooks (measure, check, recency).

The hot path asks `name in residency.resident` (a set from the routing table: versions with a placement
observed ready) and records the time of use in a dict; nothing else. A request for a version that is not
resident calls `when_resident(resolved, done)`: the first one for that version asks for a placement in
the registry (one transaction that locks the version's row, so concurrent requests through several
replicas give one placement and the one leader of the reconcile loop loads it once), every one waits
until a routing table shows the version resident, its load failed, or `cold_start_wait_s` passed
(503 with a Retry-After from the version's measured load time).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.session import transaction
from control_plane.errors import AppError, ClientClosed, NotFound, ServiceUnavailable
from control_plane.fleet import repository as fleet_repository
from control_plane.fleet.actions import BeforeUnload, ResidencyHooks
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.loader import NO_ROOM, NO_ROOM_DETAIL
from control_plane.residency import repository, sizes
from control_plane.residency.metrics import ResidencyStats
from control_plane.routing.changes import mark_desired_changed
from control_plane.routing.router import FAILED_RETRY_S
from control_plane.routing.table import SERVABLE, RoutingTable, load_failed_message

if TYPE_CHECKING:
    from control_plane.fleet.reconciler import Reconciler
    from control_plane.routing.router import Resolved

log = logging.getLogger(__name__)
Done = Callable[[AppError | None], None]
LIVE_S = 0.25  # how long one look at an instance's stub processes serves the loop
IDLE_S = 1.0  # a version nobody used for this long gets no eviction grace
GONE_S = 5.0  # how long a version Triton said it does not have is kept out of the resident set at most
LOAD_SLACK_S = 0.05  # a load's stubs start after its call began (process start times count in 10 ms ticks)
NO_ROOM_S = 5.0  # how long requests wait while the budget step finds no room for their version
NO_ROOM_RETRY_S = 10  # Retry-After of their 503
STUB_EXIT_S = 2.0  # a stub of a version unloaded (not evicted) has usually exited by then
STUB_EXIT_MAX_S = 12.0  # looked at again every STUB_EXIT_S until then, while its stubs still run


class ColdStartTimeout(ServiceUnavailable):
    """The version did not become resident within the wait."""


class LoadFailed(ServiceUnavailable):
    """The version could not be loaded."""


class VersionGone(NotFound):
    """The version was deleted while requests waited for it."""


class NoRoom(ServiceUnavailable):
    """No instance's memory budget can make room for the version now."""


@dataclass
class _Waiter:
    done: Done
    started: float
    loop: asyncio.AbstractEventLoop | None
    timer: asyncio.TimerHandle | None = None
    gone: bool = False  # its client went away (after the version was found resident, before `_finish`)


class Residency(ResidencyHooks):
    """See the module docstring."""

    def __init__(
        self,
        *,
        session_factory: sessionmaker[Session] | None,
        inflight: Counter[str],
        wait_s: float = 30.0,
        load_timeout_s: float = 300.0,
        eviction_grace_s: float = 0.2,
        flush_s: float = 1.0,
        end_stubs: bool = True,
    ) -> None:
        self.session_factory = session_factory
        self.inflight = inflight
        self.wait_s = wait_s
        self.load_timeout_s = load_timeout_s
        self.grace_s = eviction_grace_s
        self.flush_s = flush_s
        self.end_stubs = end_stubs  # end an evicted version's stubs at once (see sizes.end_stubs)
        self.stats = ResidencyStats()
        self.resident: frozenset[str] | set[str] = frozenset()  # hot path: read-only there
        self.blockers: frozenset[str] = frozenset()  # hot path: read there (see `unblocked`)
        self.used: dict[str, float] = {}  # hot path: Triton model name -> time.perf_counter() of last use
        self.reconciler: Reconciler | None = None
        self._offset = time.time() - time.perf_counter()
        self._lock = threading.Lock()  # cold path only: the waiters
        self._waiters: dict[str, list[_Waiter]] = {}
        self._load_s: dict[str, float] = {}
        self._pids: dict[str, tuple[str, int]] = {}
        self._gone: dict[str, float] = {}  # Triton said it does not have these (perf_counter when)
        self._no_room: dict[str, float] = {}  # held back for want of room since (time.monotonic())
        self._live: dict[str, tuple[float, dict[str, int]]] = {}  # instance -> (when, live_sizes)
        self._fresh: dict[str, dict[str, int]] = {}  # instance -> `fresh_sizes` (read with `_live`)
        self._generation: dict[str, float] = {}  # Triton model name -> its load here began (boot seconds)
        self._recount: threading.Timer | None = None  # the pass after unloads (`unloaded`)
        self._exiting: dict[tuple[str, str], tuple[TritonEndpoint, float]] = {}  # (instance, name) -> until
        self._flushed: dict[str, float] = {}
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="cp-residency")
        self._stop = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="cp-residency-uses", daemon=True)

    # --- data plane ----------------------------------------------------------------------------

    def when_resident(self, resolved: Resolved, done: Done) -> Callable[[], None] | None:
        """Call `done(None)` once the version is resident (now, if it is), or `done(error)`: 503 with
        Retry-After when the wait is over or the load failed. Call from the event loop. Returns, while
        the request waits, what to call if its client goes away: the request stops waiting (`done`
        gets `ClientClosed` at once) and stops counting as a reason to keep or load the version."""
        name = resolved.triton_name
        if name in self.resident:
            done(None)
            return None
        waiter = _Waiter(done, time.perf_counter(), asyncio.get_running_loop())
        self._wait(name, waiter)
        return partial(self._abandon, name, waiter)

    def prefetch(self, name: str) -> None:
        """Start loading a version nobody waits for (a shadow that is not resident)."""
        with self._lock:
            if name in self._waiters:
                return
            self._waiters[name] = []
        self._pool.submit(self._demand, name, False)

    def load_now(self, version_id: int) -> str:
        """Load a version and wait for it (promote, rollback, the load endpoint): its state after, or
        `NO_ROOM` (see `after_pass`)."""
        assert self.session_factory is not None
        with self.session_factory() as session:
            name = repository.triton_name(session, version_id)
        if name is None:
            return "retired"
        event = threading.Event()
        outcome: list[AppError | None] = []

        def done(error: AppError | None) -> None:
            outcome.append(error)
            event.set()

        if name in self.resident:
            self._demand(name, True)  # desired here again, should it be on its way out
            return "ready"
        deadline = time.monotonic() + self.reconciler_load_timeout()
        explicit, state = True, None
        while True:
            event.clear()
            waiter = _Waiter(done, time.perf_counter(), None)
            self._wait(name, waiter, explicit=explicit)
            if not event.wait(max(0.0, deadline - time.monotonic())):
                self._drop(name, waiter)
            if outcome and isinstance(outcome[-1], NoRoom):
                return NO_ROOM
            if outcome and outcome[-1] is None:
                return "ready"
            with self.session_factory() as session:
                state = fleet_repository.version_state(session, version_id)
            # Settled with an error by a routing table from before this load asked for it (the version
            # still `failed` there) while the load is on its way: wait for the load's own outcome.
            if not outcome or state != "ready" or name in self.resident or time.monotonic() >= deadline:
                break
            explicit = False
        return "failed" if state == "failed" else (state or "retired") if state != "ready" else "loading"

    def reconciler_load_timeout(self) -> float:
        """How long a blocking load waits: the load timeout (`CP_TRITON_LOAD_TIMEOUT_S`), at least the
        cold-start wait."""
        return max(self.wait_s, self.load_timeout_s)

    def on_table(self, table: RoutingTable) -> None:
        """A new routing table: the resident set, and the waiters it settles (any thread)."""
        resident = table.resident
        if self._gone:
            # A version Triton said it does not have stays out until a table has shown it gone (the
            # loop saw it too) or a few seconds passed: a table built before the loop noticed still
            # calls it resident.
            now = time.perf_counter()
            with self._lock:
                for name, since in list(self._gone.items()):
                    if name not in resident or now - since > GONE_S:
                        del self._gone[name]
                resident = resident - self._gone.keys()
        self.resident = resident
        with self._lock:
            waiting = [name for name, waiters in self._waiters.items() if waiters or name in resident]
        if not waiting:
            return
        targets = {v.triton_name: (m.name, v) for m in table.models.values() for v in m.versions.values()}
        for name in waiting:
            model, target = targets.get(name, (None, None))
            if name in resident:
                self._settle(name, None)
            elif target is None or target.state == "retired":  # deleted (its model or it) meanwhile
                self._settle(name, VersionGone("the model version no longer exists"))
            elif target.state not in SERVABLE:  # a request may load it on demand, or it is loading
                self._settle(name, _load_failed(name, target.failure, model, target.version))

    def _wait(self, name: str, waiter: _Waiter, *, explicit: bool = False) -> None:
        with self._lock:
            waiters = self._waiters.get(name)
            first = waiters is None
            self._waiters.setdefault(name, []).append(waiter)
        if waiter.loop is not None:
            waiter.timer = waiter.loop.call_later(self.wait_s, self._expire, name, waiter)
        if first or explicit:
            self._pool.submit(self._demand, name, explicit)

    def _expire(self, name: str, waiter: _Waiter) -> None:
        if self._drop(name, waiter):
            self.stats.cold_start(time.perf_counter() - waiter.started, ok=False)
            waiter.done(
                ColdStartTimeout(
                    "the model version is being loaded; try again shortly",
                    retry_after=self._retry_after(name),
                )
            )

    def _abandon(self, name: str, waiter: _Waiter) -> None:
        """The waiting request's client went away (on the event loop)."""
        waiter.gone = True
        if self._drop(name, waiter):
            if waiter.timer is not None:
                waiter.timer.cancel()
            self._gave_up(waiter)

    def _gave_up(self, waiter: _Waiter) -> None:
        self.stats.gave_up()
        waiter.done(ClientClosed("the client went away while the model version was loading"))

    def _drop(self, name: str, waiter: _Waiter) -> bool:
        with self._lock:
            waiters = self._waiters.get(name)
            if waiters is None or waiter not in waiters:
                return False
            waiters.remove(waiter)
            return True

    def _settle(self, name: str, error: AppError | None) -> None:
        with self._lock:
            waiters = self._waiters.pop(name, [])
        for waiter in waiters:
            if waiter.loop is None:
                waiter.done(error)
            else:
                waiter.loop.call_soon_threadsafe(self._finish, waiter, error)

    def _finish(self, waiter: _Waiter, error: AppError | None) -> None:
        if waiter.timer is not None:
            waiter.timer.cancel()
        if waiter.gone:  # settled, then its client went away before this ran: not sent after all
            self._gave_up(waiter)
            return
        self.stats.cold_start(time.perf_counter() - waiter.started, ok=error is None)
        waiter.done(error)

    def _retry_after(self, name: str) -> int:
        seconds = self._load_s.get(name)
        return max(1, math.ceil(1.5 * seconds)) if seconds else 2

    def _demand(self, name: str, explicit: bool) -> None:
        """Ask the registry for a placement of `name` (see the module docstring)."""
        assert self.session_factory is not None
        try:
            with transaction(self.session_factory) as session:
                version = repository.lock_version_named(session, name)
                if version is None or version.state == "retired":
                    raise VersionGone("the model version no longer exists")
                if version.state == "failed" and not explicit:
                    model = repository.model_name(session, version.model_id)
                    raise _load_failed(name, version.state_message, model, version.version)
                if version.load_seconds:
                    self._load_s[name] = version.load_seconds
                if version.state == "loading":
                    return  # a promote is loading it: the routing table tells the waiters
                if version.state != "ready":
                    version.state, version.state_message = "ready", None
                    version.updated_at = datetime.now(UTC)
                if self.reconciler is None:
                    return
                if explicit:
                    for triton in self.reconciler.tritons:
                        self.reconciler.actions.backoff.succeeded((triton.name, version.id))
                self.reconciler.place_in(session, version.id)
                mark_desired_changed(session)
        except AppError as exc:
            self._settle(name, exc)
        except Exception:
            log.exception("asking for a load of %s failed", name)
            self._settle(name, ServiceUnavailable("the model version cannot be loaded now", retry_after=2))

    # --- the reconcile loop's hooks (leader) ------------------------------------------------------

    def busy(self, name: str) -> bool:
        """Whether this process has requests to `name` in flight, or waiting for it to be resident
        (a version on its way out that requests wait for is kept: they asked for it again)."""
        return self.inflight.get(name, 0) > 0 or bool(self._waiters.get(name))

    def waiting(self, name: str) -> int:
        """How many requests here wait for `name` to become resident."""
        return len(self._waiters.get(name) or ())

    def after_pass(self, _seen: object = None) -> None:
        """After each pass of the loop (leader): requests that have waited `NO_ROOM_S` for a version the
        budget step holds back for want of room get 503 saying so (every version that could make room is
        pinned or has requests in flight, or the version is bigger than the budget) instead of waiting
        out `wait_s` or a load timeout for room that may never come; the version stays asked for."""
        budgets = self.reconciler.budgets if self.reconciler is not None else None
        held = {name for plan in budgets.plans.values() for name in plan.waiting} if budgets else set()
        waited = {name for name in held if self._waiters.get(name)}
        over = budgets is not None and any(plan.over for plan in budgets.plans.values())
        # Requests wait for room, or an instance stays over its budget (a lowered budget, a version that
        # grew) because the versions that would go are busy: one of those going idle runs the next pass
        # (`unblocked`), not `renew`'s next tick or the period (5 s over the budget, or waiting).
        self.blockers = budgets.blockers if budgets is not None and (waited or over) else frozenset()
        self._end_orphans()
        now = time.monotonic()
        for name in [n for n in self._no_room if n not in waited]:
            del self._no_room[name]  # the clock runs for requests waiting, each batch its own
        for name in waited:
            since = self._no_room.setdefault(name, now)
            if now - since >= NO_ROOM_S:
                self._settle(name, NoRoom(NO_ROOM_DETAIL, retry_after=NO_ROOM_RETRY_S))
                del self._no_room[name]

    def unblocked(self, name: str) -> None:
        """`name`, one of the busy versions that kept a version waiting for room (or the instance over its
        budget) at the last pass, has no request in flight here any more: run a pass now (once per pass;
        the next one arms it again)."""
        self.blockers = frozenset()
        if self.reconciler is not None:
            self.reconciler.trigger()

    def eviction_grace_s(self, name: str, last_used: float) -> float:
        """The grace (routes no longer send to the version, requests already on their way still find it)
        for a version used in the last `IDLE_S`, here or anywhere as the pass saw it (every replica's
        recorded uses and Triton's own `last_inference`); none for one idle longer, the usual victim:
        a cold load that waits for its room no longer waits out the grace too. A request to it that
        still arrives after the unload waits for the version like a cold one and is sent again."""
        local = self.used.get(name)
        recent = time.time() - last_used < IDLE_S or (
            local is not None and time.perf_counter() - local < IDLE_S
        )
        return self.grace_s if recent else 0.0

    def loaded(self, endpoint: TritonEndpoint, name: str, version_id: int, seconds: float) -> None:
        """Measure a version just loaded and record its memory and load time."""
        assert self.session_factory is not None
        self._load_s[name] = seconds
        self._generation[name] = since = sizes.boot_seconds() - seconds - LOAD_SLACK_S
        measured = self.measure(endpoint, name, started_since=since)
        with transaction(self.session_factory) as session:
            if measured is None:
                repository.record_load_time(session, version_id=version_id, seconds=seconds)
            else:
                repository.record_measurement(
                    session,
                    version_id=version_id,
                    memory_bytes=measured.bytes,
                    source=measured.source,
                    load_seconds=seconds,
                )
        if measured is not None and self.reconciler is not None:
            self.reconciler.measured(endpoint.name, version_id, measured.bytes)
        if name in self.blockers and not self.busy(name):  # loaded for no request (a shadow, a promote)
            self.unblocked(name)

    def measure(
        self, endpoint: TritonEndpoint, name: str, *, started_since: float | None = None
    ) -> sizes.Measured | None:
        """A loaded version's memory: Triton's statistics, else its stub processes (local Tritons; with
        `started_since`, those started since: the stubs of an earlier load still exiting are not its)."""
        try:
            reported = sizes.from_statistics(endpoint.health.statistics(name))
        except Exception as exc:  # statistics are optional: fall back to the processes
            log.info("no statistics for %s on %s: %s", name, endpoint.name, exc)
            reported = 0
        if reported > 0:
            return sizes.Measured(reported, "triton")
        pid = self._pid(endpoint)
        if pid is None:
            return None
        host, on_gpus = sizes.stub_memory(pid, name, started_since=started_since)
        if host + on_gpus <= 0:
            return None
        # A stub grows by a few percent after its first inference (numpy's buffers): counted with a
        # margin here, and the loop takes the larger of this and what the stubs hold at each pass.
        return sizes.Measured(int((host + on_gpus) * sizes.STUB_MARGIN), "stub+gpu" if on_gpus else "stub")

    def loading(self, delta: int) -> None:
        """A load call to Triton started (+1) or ended (-1): `cp_residency_loads_in_flight`."""
        self.stats.loading(delta)

    def load_failed(self, version_id: int, message: str) -> None:
        """A version that never loaded anywhere and fails its first load is `failed` (its requests get
        the reason); one that loaded before is retried by the loop (backing off)."""
        assert self.session_factory is not None
        with transaction(self.session_factory) as session:
            repository.fail_first_load(session, version_id, message)

    def load_timed_out(self, endpoint: TritonEndpoint, name: str) -> None:
        """End the stubs of a load past its timeout, on a Triton here: its Python backend then fails
        the load (the stub is not healthy), so the version leaves Triton's index and its memory comes
        back; elsewhere the budget counts what Triton still loads as held (`Budgets`), never as going."""
        pid = self._pid(endpoint)
        if pid is not None and sizes.end_stubs(pid, name):
            log.warning("ended the stubs of %s on %s: its load did not finish in time", name, endpoint.name)
            self._live.pop(endpoint.name, None)

    def live_sizes(self, endpoint: TritonEndpoint) -> dict[str, int]:
        """Triton model name -> bytes its processes hold now (its stubs and what they started; host and
        GPU memory), for a Triton on this machine. Passes come many a second under a burst of cold loads
        and each look costs a walk over /proc: one look serves for LIVE_S, or until an eviction finished
        (a stub gone is room for a waiting load)."""
        cached = self._live.get(endpoint.name)
        if cached is not None and time.monotonic() - cached[0] < LIVE_S:
            return cached[1]
        pid = self._pid(endpoint)
        found: dict[str, int] = {}
        fresh: dict[str, int] = {}
        if pid is not None:
            members = sizes.processes(pid)
            for process, (host, on_gpus) in sizes.held(members).items():
                member = members[process]
                name, held = member.model, host + on_gpus
                found[name] = found.get(name, 0) + held
                since = self._generation.get(name)
                if since is not None and sizes.started_at(member.stub) >= since:
                    fresh[name] = fresh.get(name, 0) + held
        self._live[endpoint.name] = (time.monotonic(), found)
        self._fresh[endpoint.name] = fresh
        return found

    def fresh_sizes(self, endpoint: TritonEndpoint) -> dict[str, int]:
        """Of `live_sizes`, what the stubs of versions this process loaded hold, counting only those its
        load started (a stub of an earlier load lingering beside them is not theirs): what a version
        came to hold since its load, to record."""
        self.live_sizes(endpoint)
        return self._fresh.get(endpoint.name, {})

    def gone(self, name: str) -> None:
        """Triton answered that it does not have `name` (evicted or unloaded after the routing table that
        said resident): not resident here until a routing table shows it gone and back (`on_table`)."""
        with self._lock:
            self._gone[name] = time.perf_counter()
        self.resident = self.resident - {name}
        if self.reconciler is not None:
            self.reconciler.trigger()  # the loop finds it missing and loads it again

    def before_unload(self, endpoint: TritonEndpoint, name: str) -> BeforeUnload | None:
        """Triton's own memory and the version's stubs', when Triton runs here; then, with `end_stubs`,
        end the stubs and wait for them to exit (the unload follows at once; see `sizes.end_stubs` for
        why before it): the version's memory is back before the unload, so a load waiting for the room
        may start alongside the unload."""
        pid = self._pid(endpoint)
        if pid is None:
            return None
        triton_bytes, version_bytes = sizes.rss(pid), sizes.stub_bytes(pid, name)
        freed = False
        if self.end_stubs:
            sizes.end_stubs(pid, name)
            freed = sizes.stub_bytes(pid, name) == 0
        return BeforeUnload(triton_bytes, version_bytes, freed=freed)

    def evicted(
        self, endpoint: TritonEndpoint, name: str, version_id: int, before: BeforeUnload | None, reason: str
    ) -> None:
        """Count the eviction by its reason, check the memory came back, and let the loop use the room."""
        budgets = self.reconciler.budgets if self.reconciler is not None else None
        counted = budgets.sizes.get(version_id, 0) if budgets is not None else 0
        self.stats.evicted(endpoint.name, reason, size=counted)
        try:
            self._check_returned(endpoint, name, version_id, before)
        finally:
            self._live.pop(endpoint.name, None)
            if self.reconciler is not None:
                self.reconciler.freed(room=True)

    def unloaded(self, endpoint: TritonEndpoint, name: str) -> None:
        """A version retired, deleted or moved away left the instance: once its stubs have had time to exit
        (`STUB_EXIT_S`; requests may have been in flight, so they are not ended as an eviction's are), a
        pass counts its room, for versions waiting for it and for the resident bytes shown, rather than at
        the next change or period. A stub still running then (Triton ends it a second or more after the
        unload, later on a busy machine) is looked at again every `STUB_EXIT_S`, up to `STUB_EXIT_MAX_S`,
        with a pass once it is gone. On a timer, not in the unload's action: waiting there held the
        version's actions back, so a rollback's load of it right after a keep-warm unload was not started."""
        if self.reconciler is None:
            return
        with self._lock:
            self._exiting[(endpoint.name, name)] = (endpoint, time.monotonic() + STUB_EXIT_MAX_S)
            self._count_later()

    def _count_later(self) -> None:
        """One pass after a burst of unloads, `STUB_EXIT_S` from now (under the lock)."""
        if self._recount is not None:
            return
        self._recount = threading.Timer(STUB_EXIT_S, self._count_again)
        self._recount.daemon = True
        self._recount.start()

    def _count_again(self) -> None:
        with self._lock:
            self._recount = None
            exiting = dict(self._exiting)
        self._end_orphans()
        self._live.clear()
        now = time.monotonic()  # one look per instance (`live_sizes`), which the pass below reads too
        still = {
            key
            for key, (endpoint, until) in exiting.items()
            if now < until and self.live_sizes(endpoint).get(key[1], 0) > 0
        }
        with self._lock:
            for key in exiting.keys() - still:
                if self._exiting.get(key) == exiting[key]:  # not unloaded again meanwhile
                    del self._exiting[key]
            if still:
                self._count_later()
        if self.reconciler is not None:
            self.reconciler.trigger()

    def _check_returned(
        self, endpoint: TritonEndpoint, name: str, version_id: int, before: BeforeUnload | None
    ) -> None:
        """The version's stubs exited and Triton itself did not keep what they held (other loads and
        unloads may run meanwhile, so Triton's own growth counts against what came back)."""
        pid = self._pid(endpoint)
        if before is None or pid is None or self.session_factory is None:
            return
        deadline = time.monotonic() + 5.0
        while sizes.stub_bytes(pid, name) > 0 and time.monotonic() < deadline:
            time.sleep(0.02)  # the stub exits a moment after the unload returns
        returned = (
            before.version_bytes - sizes.stub_bytes(pid, name) - max(0, sizes.rss(pid) - before.triton_bytes)
        )
        with self.session_factory() as session:
            recorded, unreturned_before = repository.unreturned_record(session, version_id)
        # What its processes held right before the unload, when known: a model that gave memory back
        # after its load (an initialize() buffer freed on first use) was reported as not returning
        # the difference from its recorded, load-time size.
        expected = before.version_bytes or recorded
        if not expected:
            return
        unreturned = None if returned >= expected // 2 else expected - max(returned, 0)
        if unreturned is not None:
            log.warning(
                "unloading %s from %s gave back %d of %d bytes", name, endpoint.name, returned, expected
            )
            self.stats.unreturned[name] = unreturned
        else:
            self.stats.unreturned.pop(name, None)
        if unreturned != unreturned_before:  # most evictions give everything back, as the last one did
            with transaction(self.session_factory) as session:
                repository.record_unreturned(session, version_id=version_id, unreturned=unreturned)

    def _end_orphans(self) -> None:
        """End what the stubs of versions unloaded from Tritons here (or of a Triton gone) started and
        left running (the unload ended the stubs, not their children): their memory is no version's and
        would never come back (`sizes.end_orphans`)."""
        sizes.end_orphans()

    def _pid(self, endpoint: TritonEndpoint) -> int | None:
        known = self._pids.get(endpoint.name)
        if known is not None and known[0] == endpoint.http_url and sizes.alive(known[1]):
            return known[1]
        pid = sizes.local_pid(endpoint.http_url)
        if pid is not None:
            self._pids[endpoint.name] = (endpoint.http_url, pid)
        return pid

    # --- recency --------------------------------------------------------------------------------

    def local_uses(self) -> Mapping[str, float]:
        """Triton model name -> last use in this process (wall-clock seconds); now, for a version with
        requests in flight here (a long request is still a use: the leader of another replica sees it at
        the next flush, and gives the version its eviction grace and a later place in the LRU order)."""
        for _ in range(5):
            try:
                snapshot = dict(self.used)
                running = [name for name, count in self.inflight.items() if count > 0]
                break
            except RuntimeError:  # grew while being copied
                continue
        else:
            return {}
        now = time.perf_counter()
        snapshot.update(dict.fromkeys(running, now))
        return {name: at + self._offset for name, at in snapshot.items()}

    def start(self) -> None:
        """Start recording last uses in the registry (so every replica's leader sees them)."""
        if self.session_factory is not None:
            self._flusher.start()

    def stop(self) -> None:
        """Stop the recorder and the demand workers."""
        self._stop.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:
                log.exception("recording last uses failed; retrying")
            self.renew()

    def renew(self) -> None:
        """Ask again for the versions requests here have waited for since before the last flush: a
        leader elsewhere (which does not see these requests) may have evicted one after it was asked for.
        Asking is idempotent: a version already placed stays as it is."""
        stale = time.perf_counter() - self.flush_s
        with self._lock:
            names = [n for n, ws in self._waiters.items() if ws and min(w.started for w in ws) < stale]
        for name in names:
            self._pool.submit(self._demand, name, False)

    def flush(self) -> None:
        """Write the last uses since the previous flush."""
        assert self.session_factory is not None
        uses = self.local_uses()
        fresh = {n: t for n, t in uses.items() if self._flushed.get(n, 0.0) < t}
        if not fresh:
            return
        with transaction(self.session_factory) as session:
            repository.touch(session, {n: datetime.fromtimestamp(t, UTC) for n, t in fresh.items()})
        self._flushed.update(fresh)


def _load_failed(name: str, message: str | None, model: str | None, number: int) -> LoadFailed:
    """The 503 for requests to a version whose load failed, worded as the router's (a failed version is
    not loaded again until it is asked for explicitly or replaced)."""
    return LoadFailed(load_failed_message(number, model, message, name), retry_after=FAILED_RETRY_S)
