"""The loop's budget step (`residency/budget.py`) with the registry's answers given: how many
versions a pass admits and evicts for, and what processes that outlived their unload count for.

The registry reads are replaced by the facts below (a unit test of the arithmetic); the real registry,
Triton and stubs are exercised by `test_residency.py`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest

from control_plane.fleet.desired import Desired
from control_plane.fleet.observed import InstanceObservation
from control_plane.fleet.reconciler import Reconciler
from control_plane.residency import repository
from control_plane.residency.budget import Budgets
from control_plane.residency.manager import Residency
from control_plane.residency.metrics import ResidencyStats
from control_plane.residency.repository import VersionFacts

MIB = 2**20
SIZE = 100 * MIB
RESIDENT = {f"r{i}": i for i in (1, 2, 3)}  # used at 1, 2, 3 o'clock: r1 least recently
INCOMING = {f"a{i}": i for i in (4, 5, 6)}  # asked for in this order


def _facts(ids: Any, **_: Any) -> dict[int, VersionFacts]:
    names = {v: n for n, v in {**RESIDENT, **INCOMING}.items()}
    return {
        v: VersionFacts(
            version_id=v,
            triton_name=names[v],
            tenant="t",
            size_bytes=1,
            memory_bytes=SIZE,
            last_used=datetime(2026, 1, 1, v, tzinfo=UTC) if names[v].startswith("r") else None,
            loaded_at=None,
            updated_at=datetime(2026, 1, 1, 10 + v, tzinfo=UTC),
        )
        for v in ids
        if v in names
    }


@pytest.fixture(autouse=True)
def registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "measured", lambda session: [])
    monkeypatch.setattr(repository, "several_tenants", lambda session: False)
    monkeypatch.setattr(repository, "version_facts", lambda session, ids, **kw: _facts(ids))


def _arrange(**kw: Any) -> tuple[Any, Desired]:
    """The instance's plan after one pass (see `_pass`), and the desired placements it left."""
    budgets, desired = _pass(**kw)
    return budgets.plans.get("i"), desired


def _pass(
    *,
    load_slots: int | None,
    live: dict[str, int] | None = None,
    waiting: dict[str, int] | None = None,
    budget: int = 3 * SIZE,
    backing_off: Collection[int] = (),
    busy: Collection[str] = (),
    tenant_share: float | None = None,
    share_idle_s: float = 0.0,
    pinned: frozenset[int] = frozenset(),
    budgets: Budgets | None = None,
    triton: dict[str, str] | None = None,
    unwanted: Collection[str] = (),
    loading: Collection[int] = (),
    stalled: Collection[int] = (),
) -> tuple[Budgets, Desired]:
    budgets = budgets or Budgets(
        default_budget=budget,
        tenant_share=tenant_share,
        share_idle_s=share_idle_s,
        live_sizes=lambda endpoint: live or {},
        stats=ResidencyStats(),
        busy=lambda name: name in busy,
        local_uses=dict,
        load_slots=None if load_slots is None else (lambda instance: load_slots),
        waiting=lambda name: (waiting or {}).get(name, 0),
        may_load=lambda instance, version_id: version_id not in backing_off,
        stalled=lambda instance: stalled,
    )
    on = {n: v for n, v in {**RESIDENT, **INCOMING}.items() if n not in unwanted}
    desired = Desired(on={"i": on}, holders={}, recorded={}, pinned=pinned)
    observation = InstanceObservation(
        name="i",
        ready=True,
        checked_at=datetime.now(UTC),
        models={n: "READY" for n in RESIDENT} | (triton or {}),
    )
    budgets.arrange(
        MagicMock(),
        endpoints=[SimpleNamespace(name="i")],  # type: ignore[list-item]
        rows={"i": SimpleNamespace(id=1, memory_budget_bytes=None)},  # type: ignore[dict-item]
        seen={"i": observation},
        desired=desired,
        ours={n: (v, "ready") for n, v in {**RESIDENT, **INCOMING}.items()},
        loading=lambda instance: set(loading),
        unloading=lambda instance: set(),
    )
    return budgets, desired


def test_a_pass_evicts_only_for_the_loads_that_can_start() -> None:
    plan, desired = _arrange(load_slots=1)
    assert plan.evict == [("r1", 1)], "one load worker: one eviction, of the least recently used"
    assert plan.reasons == {1: "lru"}, "the reason its eviction is counted by"
    assert plan.last_used == {1: datetime(2026, 1, 1, 1, tzinfo=UTC).timestamp()}  # for its grace
    assert set(desired.on["i"]) == {"r2", "r3"}, "the incoming versions wait (a4 for its eviction)"
    assert plan.after_evictions == [("a4", 4)], "a4 loads as soon as r1's eviction is over"
    assert plan.waiting == [], "waiting for a load worker is not waiting for room"


def test_a_version_idle_for_long_gives_way_whatever_its_tenants_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """r1 belongs to a quiet tenant, r2, r3 and the incoming a4 to a busy one; all were last used long
    ago (facts of 2026-01-01). With shares of half the budget, the busy tenant (3 of 3 with a4) made room
    from its own r2, so two busy versions evicted each other while the quiet tenant's idle r1 held its
    memory forever; past the idle cutoff, r1 goes first (least recently used)."""

    def facts(ids: Any, **_: Any) -> dict[int, VersionFacts]:
        return {v: replace(f, tenant="quiet" if v == 1 else "busy") for v, f in _facts(ids).items()}

    monkeypatch.setattr(repository, "version_facts", lambda session, ids, **kw: facts(ids))
    plan, _ = _arrange(load_slots=1, tenant_share=0.5)
    assert plan.evict == [("r2", 2)], "the share alone: the busy tenant makes room from its own"
    assert plan.reasons == {2: "tenant_share"}
    plan, _ = _arrange(load_slots=1, tenant_share=0.5, share_idle_s=120.0)
    assert plan.evict == [("r1", 1)], "idle for longer than the cutoff: no share keeps it"
    assert plan.reasons == {1: "idle"}


def test_without_a_cap_every_incoming_version_evicts_at_once() -> None:
    plan, _ = _arrange(load_slots=None)
    assert sorted(plan.evict) == [("r1", 1), ("r2", 2), ("r3", 3)]


def test_processes_that_outlived_their_unload_count_against_the_budget() -> None:
    plan, desired = _arrange(load_slots=3, live={"gone": SIZE})
    assert plan.used == 4 * SIZE
    # Room for 3, one taken by the lingering process (never a victim): all three resident versions go
    # for two incoming ones, and the third incoming one waits for room.
    assert len(plan.evict) == 3 and plan.waiting == ["a6"]
    assert not set(desired.on["i"]) & set(INCOMING), "no load starts before its evictions finished"
    assert plan.after_evictions == [("a4", 4), ("a5", 5)], "the room the evictions make: two loads"


def test_only_a_version_used_in_the_last_second_gets_an_eviction_grace() -> None:
    residency = Residency(session_factory=None, inflight=Counter(), eviction_grace_s=0.2)
    now = time.time()
    assert residency.eviction_grace_s("idle", now - 5) == 0.0, "idle: evicted without waiting"
    assert residency.eviction_grace_s("recent", now - 0.3) == 0.2, "used (anywhere) 0.3 s ago"
    residency.used["here"] = time.perf_counter() - 0.1  # a use here the pass did not see yet
    assert residency.eviction_grace_s("here", now - 5) == 0.2
    residency.used["here"] = time.perf_counter() - 3
    assert residency.eviction_grace_s("here", 0.0) == 0.0


def _asked(monkeypatch: pytest.MonkeyPatch, seconds_ago: dict[int, float]) -> None:
    now = datetime.now(UTC)
    monkeypatch.setattr(
        repository,
        "version_facts",
        lambda session, ids, **kw: {
            v: replace(f, updated_at=now - timedelta(seconds=seconds_ago[v])) if v in seconds_ago else f
            for v, f in _facts(ids).items()
        },
    )


def test_the_version_most_requests_wait_for_takes_the_free_load_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _asked(monkeypatch, {4: 0.3, 5: 0.2, 6: 0.1})
    plan, _ = _arrange(load_slots=1)
    assert plan.after_evictions == [("a4", 4)], "nobody waiting here: in the order they were asked for"
    plan, _ = _arrange(load_slots=1, waiting={"a4": 1, "a6": 3})
    assert plan.after_evictions == [("a6", 6)], "three requests wait for a6, one for a4"


def test_a_version_few_requests_wait_for_still_gets_its_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    _asked(monkeypatch, {4: 5.0, 5: 0.2, 6: 0.1})
    plan, _ = _arrange(load_slots=1, waiting={"a4": 1, "a6": 3})
    assert plan.after_evictions == [("a4", 4)], "asked for 5 s ago: each second waited counts as a request"


def _tenants(monkeypatch: pytest.MonkeyPatch, tenants: dict[int, str]) -> None:
    monkeypatch.setattr(
        repository,
        "version_facts",
        lambda session, ids, **kw: {
            v: replace(f, tenant=tenants.get(v, f.tenant)) for v, f in _facts(ids).items()
        },
    )
    monkeypatch.setattr(repository, "several_tenants", lambda session: True)


def test_no_tenant_takes_every_load_worker_of_a_shared_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers; one tenant asked first for two versions, another tenant for one: the second worker
    goes to the other tenant, so loads that hang (or take minutes) cannot hold every tenant's cold start."""
    _tenants(monkeypatch, {4: "evil", 5: "evil", 6: "good"})
    plan, _ = _arrange(load_slots=2)
    assert [name for name, _ in plan.after_evictions] == ["a4", "a6"]


def test_one_tenant_alone_uses_every_load_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    plan, _ = _arrange(load_slots=2)  # every version is tenant "t"'s
    assert [name for name, _ in plan.after_evictions] == ["a4", "a5"]


def test_the_load_workers_of_an_instance_without_a_budget_are_shared_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No budget (the default): nothing is evicted, and the versions that wait for a worker are not
    started this pass (they were all queued on the instance's workers in the order asked for)."""
    _tenants(monkeypatch, {4: "evil", 5: "evil", 6: "good"})
    plan, desired = _arrange(load_slots=2, budget=0)
    assert plan is None
    assert set(desired.on["i"]) == {*RESIDENT, "a4", "a6"}, "a5 waits: evil holds one of two workers"


@pytest.mark.parametrize("budget", [3 * SIZE, 0])
def test_versions_whose_loads_back_off_take_no_load_worker(
    monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """Versions whose last loads failed (a broken artifact: retried ever more slowly) were asked for
    long ago, so they came first for the free workers every pass, and the loop then skipped them for
    their backoff: another tenant's cold version never loaded. They neither take a worker nor evict."""
    _tenants(monkeypatch, {4: "broken", 5: "broken", 6: "good"})
    plan, desired = _arrange(load_slots=1, budget=budget, backing_off={4, 5})
    if budget:
        assert plan.after_evictions == [("a6", 6)] and plan.evict == [("r1", 1)], "one eviction, for a6"
    else:
        assert "a6" in desired.on["i"], "a6 takes the free worker"


@pytest.mark.parametrize(
    ("load_slots", "budget", "live", "backing_off", "room", "worker"),
    [
        (3, 3 * SIZE, None, (), False, False),  # each incoming version loads when its eviction ends
        (1, 3 * SIZE, None, (), False, True),  # a5 and a6 wait for the load worker
        (3, 3 * SIZE, {"gone": SIZE}, (), True, False),  # a6 waits for room (a process outlived its unload)
        (3, 3 * SIZE, None, (5,), False, True),  # a5's load backs off: tried at a pass after its backoff
        (3, 0, None, (), False, False),  # no budget: a worker each
        (2, 0, None, (), False, True),  # no budget: a6 waits for a worker
    ],
)
def test_a_pass_says_what_it_held_a_version_back_for(
    load_slots: int,
    budget: int,
    live: dict[str, int] | None,
    backing_off: tuple[int, ...],
    room: bool,
    worker: bool,
) -> None:
    """The loop runs again when an eviction ends only if the last pass held back a version for room,
    when a load ends only if it held one back for a load worker (`Reconciler.freed`): a quiet cold start
    ran three passes (the request's, its eviction's, its load's), the last beside its first inference."""
    budgets, _ = _pass(load_slots=load_slots, budget=budget, live=live, backing_off=backing_off)
    assert (budgets.held_for_room, budgets.held_for_worker) == (room, worker)


@pytest.mark.parametrize(("room", "worker"), [(False, False), (True, False), (False, True), (True, True)])
def test_a_freed_worker_or_room_runs_the_loop_only_for_what_was_held_back(room: bool, worker: bool) -> None:
    trigger = MagicMock()
    loop = SimpleNamespace(
        budgets=SimpleNamespace(held_for_room=room, held_for_worker=worker), trigger=trigger
    )
    Reconciler.freed(loop, room=True)  # type: ignore[arg-type]
    assert trigger.called is room, "an eviction ended"
    trigger.reset_mock()
    Reconciler.freed(loop, worker=True)  # type: ignore[arg-type]
    assert trigger.called is worker, "a load ended"
    Reconciler.freed(SimpleNamespace(budgets=None, trigger=trigger), worker=True)  # type: ignore[arg-type]
    assert trigger.called, "without residency every load runs a pass, as before"


def test_a_version_measured_bigger_than_counted_runs_the_loop_only_if_the_budget_no_longer_holds() -> None:
    """A first load is counted at an estimate; its measurement after the load may be larger. The loop
    runs again at once only when the instance's planned total with the measured size is over budget."""
    budgets, desired = _pass(load_slots=1, budget=5 * SIZE)  # r1-r3 stay, a4 loads: 4 of 5 planned
    assert "a4" in desired.on["i"] and budgets.sizes[4] == SIZE
    assert not budgets.overflows("i", 4, SIZE), "as counted"
    assert not budgets.overflows("i", 4, SIZE + 50 * MIB), "larger, still within the budget"
    assert budgets.overflows("i", 4, 2 * SIZE + 1), "larger than the room left"
    assert not budgets.overflows("i", 99, 10 * SIZE), "a version the pass did not count"
    assert not budgets.overflows("other", 4, 10 * SIZE), "an instance the pass did not plan"


@pytest.mark.parametrize("loaded", [True, False])
def test_a_load_that_did_not_happen_gives_back_its_room_too(loaded: bool) -> None:
    """A failed or dropped load frees its worker and the room the pass planned for it: the loop runs
    again for versions held back for either."""
    loop = SimpleNamespace(freed=MagicMock())
    Reconciler._load_done(loop, loaded)  # type: ignore[arg-type]
    loop.freed.assert_called_once_with(worker=True, room=not loaded)


@pytest.mark.parametrize(
    ("busy", "blockers"),
    [
        ((), frozenset()),  # r1-r3 evicted for a4-a6: nothing waits for room
        (("r1",), frozenset({"r1"})),  # r2 and r3 make room for two; one waits while r1 is busy
        (("r1", "r2", "r3"), frozenset({"r1", "r2", "r3"})),  # every candidate busy: all three wait
    ],
)
def test_a_pass_names_the_busy_versions_that_kept_a_version_waiting_for_room(
    busy: tuple[str, ...], blockers: frozenset[str]
) -> None:
    """One of them going idle is the room a waiting version needs (`Residency.unblocked`)."""
    budgets, _ = _pass(load_slots=3, busy=busy)
    assert budgets.blockers == blockers
    assert budgets.held_for_room is bool(blockers)


@pytest.mark.parametrize(
    ("busy", "evicted", "blockers"),
    [
        ((), ["r1", "r2", "r3"], frozenset()),  # a budget lowered below one version: every idle one goes
        (("r3",), ["r1", "r2"], frozenset({"r3"})),  # r3 answers: over the budget until it is idle
    ],
)
def test_a_pass_that_leaves_the_instance_over_its_budget_names_the_busy_versions_keeping_it_there(
    busy: tuple[str, ...], evicted: list[str], blockers: frozenset[str]
) -> None:
    """Nothing waits for room (the versions asked for back off), but the budget was lowered to half a
    version: the idle ones are evicted at once, a busy one once it is idle (`Residency.unblocked`), not
    at the loop's next period."""
    budgets, _ = _pass(load_slots=2, budget=SIZE // 2, busy=busy, backing_off=(4, 5, 6))
    plan = budgets.plans["i"]
    assert [name for name, _ in plan.evict] == evicted and plan.waiting == []
    assert set(plan.reasons.values()) == {"over_budget"}
    assert plan.over is bool(blockers) and budgets.blockers == blockers


def test_a_version_triton_still_loads_after_its_load_was_given_up_is_held_not_going() -> None:
    """r3's load timed out here (an `initialize()` that never returns on a Triton elsewhere): failed, so
    no longer desired, but Triton still shows it LOADING and its memory held. It was counted as on its
    way out, so the pass made no room for a4 and held it back for that room, pass after pass, for good;
    now r3 counts as held and the least recently used idle version makes the room."""
    plan, _ = _arrange(load_slots=1, triton={"r3": "LOADING"}, unwanted=("r3",), backing_off=(5, 6))
    assert plan.evict == [("r1", 1)] and plan.after_evictions == [("a4", 4)]
    assert plan.planned <= 3 * SIZE


def _residency_after_pass(
    *, waiting: list[str], blockers: frozenset[str], over: bool = False
) -> tuple[Residency, MagicMock]:
    residency = Residency(session_factory=None, inflight=Counter())
    trigger = MagicMock()
    plan = SimpleNamespace(waiting=waiting, blockers=blockers, over=over)
    budgets = SimpleNamespace(plans={"i": plan}, blockers=blockers)
    residency.reconciler = SimpleNamespace(budgets=budgets, trigger=trigger)  # type: ignore[assignment]
    return residency, trigger


def test_a_busy_version_going_idle_runs_the_loop_once_when_requests_wait_for_room() -> None:
    residency, trigger = _residency_after_pass(waiting=["cold"], blockers=frozenset({"hot"}))
    residency.after_pass()
    assert residency.blockers == frozenset(), "nobody waits for 'cold' here: the period will do"
    residency._waiters["cold"] = [MagicMock()]
    residency.after_pass()
    assert residency.blockers == {"hot"}
    residency.unblocked("hot")
    assert trigger.call_count == 1 and residency.blockers == frozenset(), "once per pass"
    residency.after_pass()
    assert residency.blockers == {"hot"}, "armed again by the next pass"


def test_a_busy_version_keeping_its_instance_over_the_budget_runs_the_loop_once_it_is_idle() -> None:
    residency, trigger = _residency_after_pass(waiting=[], blockers=frozenset({"hot"}), over=True)
    residency.after_pass()
    assert residency.blockers == {"hot"}, "armed with nobody waiting: the instance is over its budget"
    residency.unblocked("hot")
    assert trigger.call_count == 1 and residency.blockers == frozenset()


def test_the_no_room_wait_is_counted_for_requests_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A version held back for room while nobody waits for it starts no clock: a request that comes
    later waits NO_ROOM_S before its 503, not none (it got the 503 at once when the version had been
    held back that long before it came); each batch of waiters gets its own NO_ROOM_S."""
    from control_plane.residency import manager

    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    residency, _ = _residency_after_pass(waiting=["cold"], blockers=frozenset({"hot"}))
    settled: list[Any] = []
    monkeypatch.setattr(residency, "_settle", lambda name, error: settled.append((name, error)))
    residency.after_pass()
    clock[0] += 3 * manager.NO_ROOM_S  # held back all along, nobody waiting
    residency._waiters["cold"] = [MagicMock()]
    residency.after_pass()
    assert settled == [], "the clock starts with the request"
    clock[0] += manager.NO_ROOM_S
    residency.after_pass()
    assert [(name, type(error).__name__) for name, error in settled] == [("cold", "NoRoom")]
    residency.after_pass()  # its waiters are still listed here (`_settle` is stubbed): a clock of their own
    assert len(settled) == 1


def test_versions_that_cannot_fit_take_no_load_worker_from_those_that_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two tenants each asked first for a version bigger than the whole budget, a third for one that
    fits. The big ones took both load workers every pass (asked for first, one per tenant) and waited
    for room forever, so no other cold version on the instance ever loaded, whatever the room; they
    now take no worker and wait (their requests get the no-room 503), and the third loads."""
    monkeypatch.setattr(
        repository,
        "version_facts",
        lambda session, ids, **kw: {
            v: replace(
                f,
                tenant={4: "a", 5: "b", 6: "c"}.get(v, f.tenant),
                memory_bytes=4 * SIZE if v in (4, 5) else SIZE,
            )
            for v, f in _facts(ids).items()
        },
    )
    monkeypatch.setattr(repository, "several_tenants", lambda session: True)
    plan, desired = _arrange(load_slots=2)
    assert plan.after_evictions == [("a6", 6)] and plan.evict == [("r1", 1)], "a6 loads, in r1's room"
    assert sorted(plan.waiting) == ["a4", "a5"], "told there is no room (the 503 after 5 s)"
    assert not {"a4", "a5"} & set(desired.on["i"])
    assert plan.planned <= 3 * SIZE


@pytest.mark.parametrize(("stalled", "loads"), [((), False), ((4,), True), ((4, 5), True)])
def test_loads_stalled_in_triton_hold_no_load_worker(
    monkeypatch: pytest.MonkeyPatch, stalled: tuple[int, ...], loads: bool
) -> None:
    """Tenants b and c each have a load running on the instance's two workers (their `initialize()`
    hangs, say): tenant t's a6 waited for a worker until one of them reached the load timeout (300 s
    by default). A stalled load (`Actions.stalled_on`) holds none, so a6 loads beside them."""
    monkeypatch.setattr(
        repository,
        "version_facts",
        lambda session, ids, **kw: {
            v: replace(f, tenant={4: "b", 5: "c"}.get(v, f.tenant)) for v, f in _facts(ids).items()
        },
    )
    monkeypatch.setattr(repository, "several_tenants", lambda session: True)
    budgets, desired = _pass(load_slots=2, budget=10 * SIZE, loading=(4, 5), stalled=stalled)
    plan = budgets.plans["i"]
    assert ("a6" in desired.on["i"]) is loads and budgets.held_for_worker is not loads
    assert plan.evict == [], "a budget with room for all: waiting was for a worker only"


def test_every_pinned_version_the_budget_cannot_hold_is_reported() -> None:
    """Pinned versions beyond the budget that found no free load worker were not counted as over it:
    r1..r3 pinned fill the budget, and three pinned versions more are asked for (one load worker)."""
    budgets, desired = _pass(load_slots=1, pinned=frozenset({1, 2, 3, 4, 5, 6}))
    plan = budgets.plans["i"]
    assert sorted(plan.waiting) == ["a4", "a5", "a6"] and plan.evict == []
    assert budgets._pinned_over["i"] == 3 * SIZE, "6 pinned of 100 MiB against 300 MiB (100 MiB counted)"
    assert not set(INCOMING) & set(desired.on["i"])


def test_an_estimate_never_refuses_a_version_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    """The only measured version is bigger than the budget (another tenant's big model): a new model's
    estimate, the median of the measured ones, said it could never fit, so it never loaded and was never
    measured. An estimate is now at most the room the unpinned versions can make: it loads (and its load
    measures it)."""
    monkeypatch.setattr(repository, "measured", lambda session: [(4 * SIZE, 1000)])
    monkeypatch.setattr(
        repository,
        "version_facts",
        lambda session, ids, **kw: {
            v: replace(f, memory_bytes=None, size_bytes=480) if v == 4 else f for v, f in _facts(ids).items()
        },
    )
    budgets, _ = _pass(load_slots=1, budget=3 * SIZE)
    plan = budgets.plans["i"]
    assert plan.waiting == [] and plan.after_evictions == [("a4", 4)]
    assert budgets.sizes[4] == 3 * SIZE, "counted at the room it may take, not at 400 MiB"
    budgets, _ = _pass(load_slots=1, budget=3 * SIZE, pinned=frozenset({1}))
    assert budgets.sizes[4] == 2 * SIZE, "the room besides the pinned r1"
    monkeypatch.setattr(repository, "measured", lambda session: [])  # nothing measured yet
    budgets, _ = _pass(load_slots=1, budget=SIZE)
    assert budgets.sizes[4] == SIZE, "a stub's assumed 128 MiB is more than a 100 MiB budget"
    assert budgets.plans["i"].after_evictions == [("a4", 4)]


def test_memory_a_version_came_to_hold_after_its_load_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that allocates on its first inference was measured small at its load, and counted at that
    size for every load after (each took the instance over its budget until the next pass): what its
    processes hold, 10% over the record or more for 3 s, is recorded (the lowest reading). A moment over
    it is not: a stub of its previous load may linger beside the new one."""
    recorded: list[dict[int, int]] = []
    monkeypatch.setattr(repository, "record_growth", lambda session, grown: recorded.append(dict(grown)))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    live = {"r1": 3 * SIZE, "r2": SIZE + SIZE // 20}  # what the budget step reads at each pass
    budgets, _ = _pass(load_slots=1, live=live, budget=10 * SIZE)  # room for all: nothing evicted
    assert recorded == [] and budgets.sizes[1] == 3 * SIZE, "counted at once, recorded not yet"
    for seconds, r1, grown in [
        (2.0, 2 * SIZE, []),
        (
            1.5,
            2 * SIZE + SIZE // 2,
            [{1: 2 * SIZE}],
        ),  # over it for 3.5 s: the lowest reading (r2's 5%: noise)
        (5.0, SIZE, []),  # back under its record (which this test does not change)
        (1.0, 2 * SIZE, []),
        (2.0, 2 * SIZE, []),  # over it again for 2 s only
    ]:
        clock[0] += seconds
        live["r1"] = r1
        recorded.clear()
        _pass(load_slots=1, live=live, budgets=budgets)
        assert recorded == grown, (seconds, r1)


def test_growth_of_a_version_loaded_here_is_read_from_its_own_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where this process loaded a version, only its load's own stubs count for its growth: a stub of its
    previous load lingering beside them (3 SIZE in all for r2 here) is not growth."""
    recorded: list[dict[int, int]] = []
    monkeypatch.setattr(repository, "record_growth", lambda session, grown: recorded.append(dict(grown)))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    budgets = _budgets(
        live={"r1": 3 * SIZE, "r2": 3 * SIZE}, fresh={"r1": 2 * SIZE, "r2": SIZE}, budget=20 * SIZE
    )
    for _ in range(2):
        _pass(load_slots=1, budgets=budgets)
        clock[0] += 3.0
    assert recorded == [{1: 2 * SIZE}], "after 3 s, r1's own stubs' growth; r2's did not grow"
    assert budgets.sizes[1] == budgets.sizes[2] == 3 * SIZE, "counted at what every stub holds meanwhile"


def _budgets(*, live: dict[str, int], fresh: dict[str, int], budget: int = 3 * SIZE) -> Budgets:
    return Budgets(
        default_budget=budget,
        tenant_share=None,
        live_sizes=lambda endpoint: live,
        fresh_sizes=lambda endpoint: fresh,
        stats=ResidencyStats(),
        busy=lambda name: False,
        local_uses=dict,
        load_slots=lambda instance: 1,
        waiting=lambda name: 0,
    )


def test_a_spike_it_grew_to_never_refuses_a_version_and_comes_back_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found by an adversarial run: a model that held 170 MB more during one inference (7 s) was recorded
    at 219 MB, evicted as over a 200 MB budget while it held 43 MB again, and refused for good. A grown
    figure now gives way, for a resident version, to what it holds; for one to load, to the room; and it
    is recorded back down once the version has held well less for 3 s."""
    recorded: list[dict[int, int]] = []
    monkeypatch.setattr(repository, "record_growth", lambda session, grown: recorded.append(dict(grown)))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    spiked = {1: 4 * SIZE, 4: 4 * SIZE}  # r1 resident, a4 incoming: both recorded at a spike over the budget
    monkeypatch.setattr(
        repository,
        "version_facts",
        lambda session, ids, **kw: {
            v: replace(f, memory_bytes=spiked[v], memory_source=repository.GROWN) if v in spiked else f
            for v, f in _facts(ids).items()
        },
    )
    budgets = _budgets(live={"r1": SIZE // 2}, fresh={"r1": SIZE // 2})
    _pass(load_slots=1, budgets=budgets)
    plan = budgets.plans["i"]
    assert budgets.sizes[1] == SIZE // 2, "resident: counted at what it holds, not at its spike"
    assert budgets.sizes[4] == 3 * SIZE, "to load: at most the room, never refused for good"
    assert plan.waiting == [] and plan.after_evictions == [("a4", 4)]
    assert "over_budget" not in plan.reasons.values(), "r1 is not evicted for a spike it freed"
    clock[0] += 3.5
    _pass(load_slots=1, budgets=budgets)
    assert recorded[-1] == {1: SIZE // 2}, "back down after 3 s at half a SIZE"


def test_a_version_evicted_while_above_its_record_has_that_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its growth (an allocation at its first inference) took the instance over the budget, so the first
    pass that saw it evicted it: waiting for the 3 s never recorded anything, and each reload went over
    the budget again."""
    recorded: list[dict[int, int]] = []
    monkeypatch.setattr(repository, "record_growth", lambda session, grown: recorded.append(dict(grown)))
    budgets = _budgets(live={"r1": 2 * SIZE}, fresh={"r1": 2 * SIZE})
    _pass(load_slots=1, budgets=budgets)
    assert ("r1", 1) in budgets.plans["i"].evict
    assert recorded == [{1: 2 * SIZE}]
