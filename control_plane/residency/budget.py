"""The reconcile loop's residency step: keep each instance within its memory budget.

Run by the loop inside its pass, after the placement policy and before loads start. For each instance
with a budget it accounts what is resident there (loaded or loading per Triton's index, or being loaded
by the loop), what the desired placements would add, and asks `policy.decide` what to admit, evict and
defer. Evicted placements become desired `absent` (the loop unloads them); incoming versions load only
once the evictions they need have finished (the loop runs again when one does), so the sum of sizes on
an instance never exceeds its budget.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache, partial

from sqlalchemy.orm import Session

from control_plane.db.models import TritonInstance
from control_plane.errors import AppError
from control_plane.fleet.desired import Desired
from control_plane.fleet.instances import TritonEndpoint
from control_plane.fleet.observed import InstanceObservation
from control_plane.residency import repository, sizes
from control_plane.residency.metrics import ResidencyStats
from control_plane.residency.policy import Entry, decide
from control_plane.timestamps import as_utc

log = logging.getLogger(__name__)
PRESENT = ("READY", "LOADING")
_LINGERING = -1  # the policy's entry for processes of versions already unloaded
# Processes holding this much more than a version's recorded memory for GROWN_FOR_S are recorded (the
# lowest reading then): not a moment's spike in one inference, nor a stub of its previous load lingering a
# second or two beside the new one (where this process loaded it, only its load's own processes count).
GROWN_RATIO = 1.1
GROWN_FOR_S = 3.0


@dataclass
class Plan:
    """What the loop does on one instance this pass."""

    evict: list[tuple[str, int]] = field(default_factory=list)  # (Triton model name, version id)
    waiting: list[str] = field(default_factory=list)  # desired, no room yet
    last_used: dict[int, float] = field(default_factory=dict)  # evicted version id -> its last use seen
    reasons: dict[int, str] = field(default_factory=dict)  # evicted version id -> why (policy.REASONS)
    # Admitted versions that fit once this pass's evictions are over: they load as soon as those finish.
    after_evictions: list[tuple[str, int]] = field(default_factory=list)
    used: int = 0
    budget: int = 0
    planned: int = 0  # bytes resident once this pass's evictions and admitted loads are done
    # With versions waiting for room, or the instance over its budget after this pass: the resident
    # versions not evicted only because they were busy (requests in flight or waiting, or loading). One
    # of them going idle is room, if nothing else is, or the victim that brings the instance back under.
    blockers: frozenset[str] = frozenset()

    @property
    def over(self) -> bool:
        """Whether the instance stays over its budget once this pass's evictions are done."""
        return self.planned > self.budget


class Budgets:
    """Per-instance memory accounting for the loop (see the module docstring)."""

    def __init__(
        self,
        *,
        default_budget: int,
        tenant_share: float | None,
        share_idle_s: float = 0.0,
        headroom: int = 0,
        live_sizes: Callable[[TritonEndpoint], Mapping[str, int]] | None = None,
        fresh_sizes: Callable[[TritonEndpoint], Mapping[str, int]] | None = None,
        stats: ResidencyStats,
        busy: Callable[[str], bool],
        local_uses: Callable[[], Mapping[str, float]],
        load_slots: Callable[[str], int] | None = None,
        stalled: Callable[[str], Collection[int]] | None = None,
        waiting: Callable[[str], int] | None = None,
        may_load: Callable[[str, int], bool] | None = None,
    ) -> None:
        self.default_budget = default_budget
        self.tenant_share = tenant_share
        self.share_idle_s = share_idle_s  # a version unused this long loses its tenant share's protection
        self.headroom = headroom  # bytes kept free ahead of the next load (evicting idle versions)
        self.live_sizes = live_sizes  # Triton model name -> bytes its processes hold now (local Tritons)
        self.fresh_sizes = fresh_sizes  # the same, of its current load's processes, for versions loaded here
        self.stats = stats
        self.busy = busy  # Triton model name -> whether this process has requests in flight to it
        self.local_uses = local_uses  # Triton model name -> last use here (wall-clock seconds)
        # Instance name -> loads that run at once there: no more versions are admitted (nor evicted for)
        # in a pass than can start loading, so eviction happens just in time and picks the true LRU.
        self.load_slots = load_slots
        self.stalled = stalled  # instance -> versions whose load calls Triton past the stall time
        # Triton model name -> requests here waiting for it to load: with more versions asked for than
        # can start loading, those more requests wait for go first (each second a version has waited
        # counts as one more request, so none starves); other replicas' requests count by age only.
        self.waiting = waiting
        # (instance, version id) -> whether its load may be tried now (not backing off after failures):
        # one that may not neither takes a load worker nor makes room this pass.
        self.may_load = may_load
        self.sizes: dict[int, int] = {}  # version id -> bytes counted (measured or estimated)
        self._grown: dict[int, int] = {}  # version id -> what its processes hold, well over its record
        # version id -> (well above or below its record since, the reading nearest the record, above?)
        self._over: dict[int, tuple[float, int, bool]] = {}
        self._seen: set[int] = set()  # versions whose size this pass read
        self._fresh: Mapping[str, int] = {}  # `fresh_sizes` of the instance being arranged
        self._over_budget: dict[str, bool] = {}  # instance -> over its budget at the last pass (logged once)
        self.plans: dict[str, Plan] = {}
        # The last pass held a version back for want of room (the end of an eviction may let it go), or
        # of a load worker or while its load backs off (the end of a load may): `Reconciler.freed`.
        self.held_for_room = False
        self.held_for_worker = False
        self._pinned_over: dict[str, int] = {}
        self._shared = False  # several tenants have models (read once per pass)

    @property
    def blockers(self) -> frozenset[str]:
        """Every instance's `Plan.blockers` of the last pass."""
        return frozenset().union(*(plan.blockers for plan in self.plans.values()))

    def overflows(self, instance: str, version_id: int, measured: int) -> bool:
        """Whether a version measured after its load at more than the last pass counted for it takes the
        instance over its budget as that pass planned it (then the next pass must make the room now)."""
        plan, counted = self.plans.get(instance), self.sizes.get(version_id)
        if plan is None or counted is None or measured <= counted:
            return False
        return plan.planned + measured - counted > plan.budget

    def budget_of(self, row: TritonInstance) -> int:
        """An instance's budget in bytes (0: none)."""
        return row.memory_budget_bytes or self.default_budget

    def arrange(
        self,
        session: Session,
        *,
        endpoints: Collection[TritonEndpoint],
        rows: Mapping[str, TritonInstance],
        seen: Mapping[str, InstanceObservation],
        desired: Desired,
        ours: Mapping[str, tuple[int, str]],
        loading: Callable[[str], Collection[int]],
        unloading: Callable[[str], Collection[int]],
    ) -> dict[str, Plan]:
        """Decide each budgeted instance's evictions and hold back loads that must wait (module docstring)."""
        # What measured versions weigh: read only if a version this pass counts has no measurement.
        estimates = cache(partial(repository.measured, session))
        pinned = desired.pinned  # the placement policy read them this pass
        self._shared = repository.several_tenants(session) if self.load_slots is not None else False
        self.held_for_room = self.held_for_worker = False
        plans: dict[str, Plan] = {}
        for endpoint in endpoints:
            row, observation = rows.get(endpoint.name), seen.get(endpoint.name)
            if row is None or observation is None or not observation.ready:
                continue
            budget = self.budget_of(row)
            if budget <= 0:  # nothing to evict; its load workers are shared all the same
                if self.load_slots is not None:
                    self._share_load_workers(
                        session, endpoint, row, observation, desired, loading(endpoint.name)
                    )
                continue
            plans[endpoint.name] = self._arrange_one(
                session,
                endpoint,
                row,
                observation,
                desired,
                ours,
                loading(endpoint.name),
                unloading(endpoint.name),
                pinned,
                estimates,
                budget,
            )
        if self._grown:
            repository.record_growth(session, self._grown)
            self._grown = {}
        self._over = {v: over for v, over in self._over.items() if v in self._seen}  # gone: starts anew
        self._seen = set()
        self.plans = plans
        return plans

    def _arrange_one(
        self,
        session: Session,
        endpoint: TritonEndpoint,
        row: TritonInstance,
        observation: InstanceObservation,
        desired: Desired,
        ours: Mapping[str, tuple[int, str]],
        loading: Collection[int],
        unloading: Collection[int],
        pinned: frozenset[int],
        estimates: Callable[[], list[tuple[int, int]]],
        budget: int,
    ) -> Plan:
        want = desired.on.setdefault(endpoint.name, {})
        present = {n: ours[n][0] for n, s in observation.models.items() if s in PRESENT and n in ours}
        present.update({n: v for n, v in want.items() if v in loading})
        incoming = self._may_load(endpoint.name, want, {n: v for n, v in want.items() if n not in present})
        ids = {*present.values(), *incoming.values(), *unloading}
        facts = repository.version_facts(session, ids, instance_id=row.id)
        for version_id in unloading:  # gone from the index, but its processes may not have exited yet
            if version_id in facts and facts[version_id].triton_name not in want:
                present.setdefault(facts[version_id].triton_name, version_id)
        local = self.local_uses()
        live = self.live_sizes(endpoint) if self.live_sizes is not None else {}
        self._fresh = self.fresh_sizes(endpoint) if self.fresh_sizes is not None else {}
        resident: list[Entry] = []
        for name, version_id in present.items():
            fact = facts.get(version_id)
            if fact is None:
                continue
            keep = name in want  # not desired here: the loop unloads it anyway, never a victim of ours
            resident.append(
                Entry(
                    version_id,
                    fact.tenant,
                    self._size(fact, estimates, live),
                    last_used=max(_ts(fact.last_used), _ts(fact.loaded_at), local.get(name, 0.0)),
                    pinned=version_id in pinned,
                    busy=not keep or version_id in loading or self.busy(name),
                )
            )
        # An estimate never refuses a version for good: one bigger than the room the unpinned versions
        # could make is tried at that size (its load measures it). The median of other models'
        # measurements (another tenant's big model, say), or with none the 128 MiB a stub is assumed to
        # take, refused a small one forever under a smaller budget, unmeasured.
        room = budget - sum(e.size for e in resident if e.pinned)
        arrivals = [
            Entry(
                v,
                facts[v].tenant,
                self._size(facts[v], estimates, live, room=room),
                last_used=_ts(facts[v].updated_at),
                pinned=v in pinned,
            )
            for v in incoming.values()
            if v in facts
        ]
        # Processes of versions no longer in Triton's index (a Python-backend stub outlives its unload
        # by a second or more) still hold memory: counted, never a victim, until they have exited.
        known = {*present, *incoming}
        lingering = sum(b for n, b in live.items() if n not in known)
        if lingering:
            resident.append(Entry(_LINGERING, "", lingering, busy=True))
        used = sum(e.size for e in resident)
        if used + sum(e.size for e in arrivals) > budget:
            resident = self._with_triton_recency(endpoint, resident, facts)
        # Versions on their way out (not desired here) still hold memory: decide as if they were gone,
        # but load nothing until they are (their unload runs the loop again); a version admitted loads
        # now only if it fits in what is held right now. Not one Triton still loads while this loop does
        # not (its load timed out here: a model's `initialize()` that never returns, say): nothing
        # unloads a loading version, so it is held, never a victim, and its room is made from the others.
        leaving = {
            v
            for n, v in present.items()
            if n not in want and (observation.models.get(n) != "LOADING" or v in loading)
        }
        staying = [e for e in resident if e.version_id not in leaving]
        idle_before = time.time() - self.share_idle_s if self.share_idle_s > 0 else None
        policy = partial(
            decide, budget=budget, share=self.tenant_share, headroom=self.headroom, idle_before=idle_before
        )
        later: list[int] = []  # no load worker free for them this pass: they neither load nor evict
        if self.load_slots is not None:
            arrivals.sort(key=self._load_order(incoming))
            # Those that could not load even alone (bigger than the room every idle, unpinned version
            # makes) take no load worker: they were asked for first, so they held every worker pass
            # after pass while every other cold version waited. The policy below tells them to wait.
            hopeless = [e for e in arrivals if policy(staying, [e]).wait]
            hopeful = [e for e in arrivals if e not in hopeless]
            taken, later = self._take_load_workers(endpoint, hopeful, loading, want, facts)
            arrivals = taken + hopeless
        decision = policy(staying, arrivals)
        plan = Plan(budget=budget)
        names = {v: n for n, v in {**present, **incoming}.items()}
        seen_used = {e.version_id: e.last_used for e in resident}
        for version_id in decision.evict:
            drift = self._over.get(version_id)
            if drift is not None and drift[2]:  # above its record, and leaving before that lasted GROWN_FOR_S
                self._grown[version_id] = drift[1]  # (taken over the budget by it, say): for its next load
            plan.evict.append((names[version_id], version_id))
            plan.last_used[version_id] = seen_used.get(version_id, 0.0)
            plan.reasons[version_id] = decision.reasons[version_id]
            want.pop(names[version_id], None)
            holders = desired.holders.get(version_id)
            if holders is not None:
                desired.holders[version_id] = holders - {endpoint.name}
        if decision.evict:
            # Shown unloading at once: routes stop sending to them when this pass commits, before their
            # evictions start (which then need no write of their own before the unload).
            repository.show_placements(session, row.id, decision.evict, state="unloading", desired="absent")
        held_back = set(decision.wait) | set(later)
        now = used
        evicted = set(decision.evict)
        after = used - sum(e.size for e in resident if e.version_id in evicted)
        for version_id in decision.admit:
            size = next(e.size for e in arrivals if e.version_id == version_id)
            if now + size > budget:
                held_back.add(version_id)  # after the evictions it needs
                if after + size <= budget:  # this pass's evictions make its room: it loads when they end
                    plan.after_evictions.append((names[version_id], version_id))
                    after += size
            else:
                now += size
                after += size
        for version_id in held_back:
            want.pop(names[version_id], None)
        if later:
            self.held_for_worker = True
        # Those admitted for this pass's evictions start when the evictions end (`Actions.load_after`).
        if held_back - set(later) - {v for _, v in plan.after_evictions}:
            self.held_for_room = True
        if plan.after_evictions:  # shown loading at once too: their workers start with nothing to write
            repository.show_placements(session, row.id, [v for _, v in plan.after_evictions], state="loading")
        plan.waiting = [names[v] for v in decision.wait]
        plan.planned = after
        if decision.wait or plan.over:
            plan.blockers = frozenset(
                names[e.version_id] for e in staying if e.busy and not e.pinned and e.version_id in names
            )
        sizes_now = {e.version_id: e.size for e in [*resident, *arrivals]}
        plan.used = sum(sizes_now[v] for v in present.values() if v in sizes_now) + lingering
        self.stats.instance(
            endpoint.name,
            versions=len(present),
            used=plan.used,
            budget=budget,
            pinned_over=decision.pinned_over,
        )
        if decision.pinned_over and self._pinned_over.get(endpoint.name) != decision.pinned_over:
            log.warning(
                "instance %s: its budget of %d bytes cannot hold the pinned versions (%d bytes short)",
                endpoint.name,
                budget,
                decision.pinned_over,
            )
        self._pinned_over[endpoint.name] = decision.pinned_over  # logged when it changes, not every pass
        over = plan.used > budget
        if over and not self._over_budget.get(endpoint.name):
            log.warning(
                "instance %s holds %d bytes against its budget of %d: versions measured bigger than "
                "counted, kept while requests use them",
                endpoint.name,
                plan.used,
                budget,
            )
        self._over_budget[endpoint.name] = over
        return plan

    def _share_load_workers(
        self,
        session: Session,
        endpoint: TritonEndpoint,
        row: TritonInstance,
        observation: InstanceObservation,
        desired: Desired,
        loading: Collection[int],
    ) -> None:
        """An instance without a budget: the versions desired there that take its free load workers this
        pass load, the others wait for the next (see `_take_load_workers`)."""
        want = desired.on.get(endpoint.name, {})
        present = {n for n, s in observation.models.items() if s in PRESENT}
        incoming = {n: v for n, v in want.items() if n not in present and v not in loading}
        incoming = self._may_load(endpoint.name, want, incoming)
        if not incoming:
            return
        running = set(loading) & set(want.values())
        facts = repository.version_facts(session, {*incoming.values(), *running}, instance_id=row.id)
        arrivals = [
            Entry(v, facts[v].tenant, 0, last_used=_ts(facts[v].updated_at))
            for v in incoming.values()
            if v in facts
        ]
        arrivals.sort(key=self._load_order(incoming))
        names = {v: n for n, v in incoming.items()}
        for version_id in self._take_load_workers(endpoint, arrivals, loading, want, facts)[1]:
            want.pop(names[version_id], None)
            self.held_for_worker = True

    def _may_load(self, instance: str, want: dict[str, int], incoming: dict[str, int]) -> dict[str, int]:
        """The incoming versions whose load may be tried now; those backing off after failed loads are
        taken out of this pass's wants (they were asked for long ago, so they came first for the free
        workers every pass while the loop skipped them: another tenant's cold version never loaded)."""
        if self.may_load is None:
            return incoming
        resting = {n for n, v in incoming.items() if not self.may_load(instance, v)}
        for name in resting:
            want.pop(name, None)
            self.held_for_worker = True  # tried again at a pass after its backoff
        return {n: v for n, v in incoming.items() if n not in resting}

    def _take_load_workers(
        self,
        endpoint: TritonEndpoint,
        arrivals: list[Entry],
        loading: Collection[int],
        want: Mapping[str, int],
        facts: Mapping[int, repository.VersionFacts],
    ) -> tuple[list[Entry], list[int]]:
        """The arrivals (in load order) that take the instance's free load workers, and the ids of those
        that wait for one. Where several tenants have models no tenant takes every worker: one
        whose loads hang or take minutes would hold every other tenant's cold start until the load
        timeout; the last worker is left to the others. Loads stalled in Triton (`Actions.stalled_on`),
        up to as many as there are workers, hold none: two tenants' loads that hang took every worker
        until the load timeout; they still count against their tenant's share."""
        assert self.load_slots is not None
        slots = self.load_slots(endpoint.name)
        running = set(loading) & set(want.values())
        tenants = Counter(facts[v].tenant for v in running if v in facts)
        cap = slots - 1 if self._shared and slots > 1 else slots
        stalled = running.intersection(self.stalled(endpoint.name)) if self.stalled is not None else set()
        free = max(0, slots - len(running) + min(len(stalled), slots))
        taken: list[Entry] = []
        later: list[int] = []
        for entry in arrivals:
            if len(taken) < free and tenants[entry.tenant] < cap:
                taken.append(entry)
                tenants[entry.tenant] += 1
            else:
                later.append(entry.version_id)
        return taken, later

    def _load_order(self, incoming: Mapping[str, int]) -> Callable[[Entry], tuple[bool, float, int]]:
        """Which incoming versions take the load workers free this pass: pinned ones, then those with the
        most requests waiting here plus seconds waited (their `last_used` is when they were asked for)."""
        now = time.time()
        names = {v: n for n, v in incoming.items()}
        waiting = self.waiting

        def key(entry: Entry) -> tuple[bool, float, int]:
            count = waiting(names[entry.version_id]) if waiting is not None else 0
            return (not entry.pinned, -(count + max(0.0, now - entry.last_used)), entry.version_id)

        return key

    def _size(
        self,
        fact: repository.VersionFacts,
        estimates: Callable[[], list[tuple[int, int]]],
        live: Mapping[str, int],
        *,
        room: int | None = None,
    ) -> int:
        """Measured (the larger of the recorded figure and what its processes hold now), else estimated:
        like the measured versions (or a stub's usual footprint, when none is). For a version to load
        (`room` given), an estimate or a figure it grew to after an earlier load is at most `room`, so
        neither refuses it for good (its load measures it again); a grown figure of a resident version
        gives way to what its processes hold now (it may have freed a spike)."""
        size = fact.memory_bytes
        grown = fact.memory_source == repository.GROWN
        if size is None:
            size = sizes.estimate(fact.size_bytes, estimates())
        if (fact.memory_bytes is None or grown) and room is not None and room > 0:
            size = min(size, room)
        now = live.get(fact.triton_name, 0)
        reading = self._fresh.get(fact.triton_name, now)  # loaded here: its own load's processes only
        if grown and room is None and reading > 0:
            size = reading
        self._seen.add(fact.version_id)
        recorded = fact.memory_bytes
        if recorded is not None and reading > recorded * GROWN_RATIO:
            self._drifted(fact.version_id, reading, up=True)
        elif grown and recorded is not None and 0 < reading * GROWN_RATIO < recorded:
            self._drifted(fact.version_id, reading, up=False)  # a spike it grew to is over: back down
        else:
            self._over.pop(fact.version_id, None)
        size = max(size, now)
        self.sizes[fact.version_id] = size
        return size

    def _drifted(self, version_id: int, reading: int, *, up: bool) -> None:
        """A version's processes hold well above (`up`) or below its recorded figure: recorded at the end of
        the pass once that has lasted GROWN_FOR_S, at the reading nearest the record meanwhile."""
        since, nearest, was_up = self._over.get(version_id, (time.monotonic(), reading, up))
        if was_up != up:
            since, nearest = time.monotonic(), reading
        nearest = min(nearest, reading) if up else max(nearest, reading)
        self._over[version_id] = (since, nearest, up)
        if time.monotonic() - since >= GROWN_FOR_S:
            self._grown[version_id] = nearest

    def _with_triton_recency(
        self, endpoint: TritonEndpoint, resident: list[Entry], facts: Mapping[int, repository.VersionFacts]
    ) -> list[Entry]:
        """Last uses merged with Triton's own `last_inference` (what other replicas sent counts too)."""
        try:
            last = sizes.last_inference_s(endpoint.health.statistics())
        except (AppError, Exception) as exc:  # statistics are a hint: never fail the pass for them
            log.info("statistics of %s unavailable: %s", endpoint.name, exc)
            return resident
        merged = []
        for entry in resident:
            fact = facts.get(entry.version_id)
            seen = 0.0 if fact is None else last.get(fact.triton_name, 0.0)
            merged.append(entry if seen <= entry.last_used else _replace_used(entry, seen))
        return merged


def _replace_used(entry: Entry, last_used: float) -> Entry:
    return Entry(entry.version_id, entry.tenant, entry.size, last_used, entry.pinned, entry.busy)


def _ts(moment: datetime | None) -> float:
    if moment is None:
        return 0.0
    return as_utc(moment).timestamp()
