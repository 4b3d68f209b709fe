"""A load that waits for room starts as soon as the evictions making it are over (`Actions.load_after`),
and not at all when one of them kept its version. The loads and evictions themselves are replaced by
recorders (the real ones, against a real Triton, are exercised by tests/residency)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from control_plane.fleet.actions import Actions
from control_plane.fleet.backoff import Backoff
from control_plane.fleet.desired import Desired
from control_plane.fleet.observed import InstanceObservation, Observed

TRITON: Any = SimpleNamespace(name="i")


class Recorder:
    """Stands in for Actions._evict (held until released, with an outcome) and Actions._load."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.unloaded = threading.Event()
        self.unloaded.set()
        self.outcome = True
        self.loaded: list[str] = []
        self.entries: list[int] = []
        self.evictions = 0

    def evict(
        self,
        endpoint: Any,
        name: str,
        version_id: int,
        *,
        last_used: float = 0.0,
        room: Any = None,
        reason: str = "lru",
    ) -> bool:
        assert self.release.wait(10)
        self.evictions += 1
        if self.outcome and room is not None:
            room.set_result(True)  # its memory is back: what a waiting load waits for
        assert self.unloaded.wait(10)  # Triton's unload and the bookkeeping after it
        return self.outcome

    def load(
        self, endpoint: Any, name: str, version_id: int, *, written: bool = False, since: float = 0.0
    ) -> bool:
        if not since:  # `load_after`'s: its worker wrote the entry while it waited for room
            assert written, "the entry written while waiting is not written again"
        self.loaded.append(name)
        return True

    def write_entry(self, version_id: int) -> None:
        self.entries.append(version_id)


@pytest.fixture
def actions() -> Any:
    done, again = threading.Event(), threading.Event()
    outcomes: list[bool] = []  # what each finished load worker said: whether its version loaded

    def finished(loaded: bool) -> None:
        outcomes.append(loaded)
        done.set()

    recorder = Recorder()
    made = Actions(
        session_factory=None,  # type: ignore[arg-type]
        loader=SimpleNamespace(  # type: ignore[arg-type]
            lock_for=lambda name: threading.Lock(),
            write_entry=recorder.write_entry,
            repository=SimpleNamespace(has_model=lambda name: False),
        ),
        observed=Observed(),
        backoff=Backoff(initial_s=1.0, max_s=2.0),
        loads_per_instance=2,
        unload_grace_s=0.0,
        on_load_done=finished,
        rerun=again.set,
    )
    made.recorder = recorder  # type: ignore[attr-defined]
    made.load_over = done  # type: ignore[attr-defined]
    made.again = again  # type: ignore[attr-defined]
    made.outcomes = outcomes  # type: ignore[attr-defined]
    made._evict = recorder.evict  # type: ignore[method-assign]
    made._load = recorder.load  # type: ignore[method-assign]
    made._version_state = lambda version_id: "ready"  # type: ignore[method-assign]
    noted: list[tuple[int, str, str | None]] = []  # placement states written (those that changed)
    made.noted = noted  # type: ignore[attr-defined]
    made._record = lambda instance, notes: noted.extend(notes)  # type: ignore[method-assign]
    yield made
    made.stop()


def test_the_load_starts_when_the_eviction_is_over(actions: Any) -> None:
    actions.evict(TRITON, "old", 1)
    actions.load_after(TRITON, [("new", 2)], [1])
    time.sleep(0.2)
    assert actions.recorder.loaded == [], "no load before its room is made"
    assert actions.recorder.entries == [2], "its repository entry is written meanwhile"
    assert actions.loading_on("i") == {2}, "counted as loading: no pass admits into its room"
    actions.recorder.release.set()
    assert actions.load_over.wait(5)
    assert actions.recorder.loaded == ["new"]
    assert actions.wait_idle(5) and actions.loading_on("i") == set()
    assert not actions.again.is_set(), "nothing left for another pass to decide"
    assert actions.outcomes == [True]


def test_no_load_when_the_eviction_kept_its_version(actions: Any) -> None:
    actions.recorder.outcome = False  # a request came for it meanwhile
    actions.evict(TRITON, "old", 1)
    actions.load_after(TRITON, [("new", 2)], [1])
    actions.recorder.release.set()
    assert actions.load_over.wait(5), "the load worker is given back (and the loop runs again)"
    assert actions.recorder.loaded == []
    assert actions.noted[-1] == (2, "unloaded", None), "its placement is not left showing a load"
    assert actions.again.is_set(), "the loop runs again to decide anew (the room it waited for is not made)"
    assert actions.outcomes == [False], "the worker came free without a load: the room planned for it too"


def test_the_load_does_not_wait_for_the_unload_once_the_memory_is_back(actions: Any) -> None:
    actions.recorder.unloaded.clear()  # the eviction's unload is still running
    actions.evict(TRITON, "old", 1)
    actions.load_after(TRITON, [("new", 2)], [1])
    time.sleep(0.2)
    assert actions.noted == [(2, "loading", None)], "shown loading while it waits for its room"
    actions.recorder.release.set()  # the evicted version's processes have exited
    assert actions.load_over.wait(5), "loaded while the unload still runs"
    assert actions.recorder.loaded == ["new"] and actions.unloading_on("i") == {1}
    actions.recorder.unloaded.set()
    assert actions.wait_idle(5)


def test_an_eviction_already_over_leaves_the_load_to_the_next_pass(actions: Any) -> None:
    actions.recorder.release.set()
    actions.evict(TRITON, "old", 1)
    assert actions.wait_idle(5)
    actions.load_after(TRITON, [("new", 2)], [1])
    assert actions.loading_on("i") == set() and actions.recorder.loaded == []
    assert actions.again.is_set(), "the loop runs again at once: its room is there"


def test_a_load_that_ended_after_the_probe_counts_as_loaded(actions: Any) -> None:
    """A pass whose probe predates a load's end must neither load the version again (Triton would reload
    it: a second stub) nor leave its memory out of the budget."""
    before = time.monotonic()
    actions._loaded_at[("i", 2)] = time.monotonic()  # what a successful _load records
    after = time.monotonic() + 1
    assert actions.loaded_since(("i", 2), before) and actions.loading_on("i", since=before) == {2}
    assert not actions.loaded_since(("i", 2), after) and actions.loading_on("i", since=after) == set()
    assert not actions.loaded_since(("i", 2), 0.0), "a probe of unknown time proves nothing"
    assert not actions.loaded_since(("i", 3), before)


def _probe(models: dict[str, str]) -> tuple[Desired, InstanceObservation]:
    """Version 2 ("new") desired on "i", and a probe of "i" taken now that found `models`."""
    desired = Desired(on={"i": {"new": 2}}, holders={2: frozenset({"i"})}, recorded={})
    seen = InstanceObservation("i", True, datetime.now(UTC), models, probed_at=time.monotonic())
    return desired, seen


@pytest.mark.parametrize("probed", [{}, {"new": "LOADING"}], ids=["missing", "loading"])
def test_a_pass_keeps_the_ready_a_load_recorded_after_its_probe(actions: Any, probed: dict[str, str]) -> None:
    """A pass probes, then converges; a load that ended in between had recorded its placement ready, and
    the pass wrote loading over it from its older look: routes skipped a servable version until the next
    pass (one load in eight under bench.residency's Zipf load; found by a review of a flaky fleet test)."""
    desired, seen = _probe(probed)
    actions._loaded_at[("i", 2)] = time.monotonic()
    actions.note_many("i", [(2, "ready", None)])  # the load's end
    actions.converge(TRITON, seen, desired, {}, {"i": seen})
    assert actions.wait_idle(5)
    assert actions.noted == [(2, "ready", None)], "not shown loading over it"
    assert actions.recorder.loaded == [], "nor loaded again"

    desired, seen = _probe(probed)  # the next pass's look is the newer one: gone (a restart), say
    actions.converge(TRITON, seen, desired, {}, {"i": seen})
    assert actions.wait_idle(5)
    assert actions.noted[-1] == (2, "loading", None)


def test_a_pass_keeps_a_failure_or_an_unload_recorded_after_its_probe(actions: Any) -> None:
    """The same for a load that failed (the pass wrote loading over it, which also dropped the failure
    and its reason from /v1/status until the retry) and for a load and an eviction both over since the
    probe (the version is gone: not ready, whatever the probe saw)."""
    desired, seen = _probe({"new": "LOADING"})
    actions._failed("i", "new", 2, "weights are missing")
    actions.converge(TRITON, seen, desired, {}, {"i": seen})
    assert actions.noted == [(2, "failed", "weights are missing")]
    assert ("i", 2) in actions.observed.failures, "its reason stays in the instance's status"

    desired, seen = _probe({"new": "LOADING"})
    actions.note_many("i", [(2, "ready", None)])
    actions.note_many("i", [(2, "unloaded", None)])
    actions.converge(TRITON, seen, desired, {}, {"i": seen})
    assert actions.noted[1:] == [(2, "ready", None), (2, "unloaded", None)]


def test_one_instances_placement_writes_go_one_at_a_time(actions: Any) -> None:
    """What this process remembers of a placement is what the registry says: a load's write that came
    while a pass was writing waits for it (the two could land in the registry the other way round, and
    later writes of the same state were skipped as unchanged)."""
    entered, release = threading.Event(), threading.Event()

    def slow_record(instance: str, notes: list[tuple[int, str, str | None]]) -> None:
        if notes[0][1] == "loading":
            entered.set()
            assert release.wait(5)
        actions.noted.extend(notes)

    actions._record = slow_record
    desired, seen = _probe({"new": "LOADING"})
    passing = threading.Thread(target=actions.converge, args=(TRITON, seen, desired, {}, {"i": seen}))
    passing.start()
    assert entered.wait(5), "the pass is writing loading"
    loaded = threading.Thread(target=actions.note_many, args=("i", [(2, "ready", None)]))
    loaded.start()
    time.sleep(0.1)
    assert actions.noted == [], "the load's write waits for the pass's"
    release.set()
    passing.join(5)
    loaded.join(5)
    assert actions.noted == [(2, "loading", None), (2, "ready", None)]
    assert actions.observed.placement_state(("i", 2)) == "ready"


def test_a_version_asked_for_again_during_its_eviction_is_not_shown_ready(actions: Any) -> None:
    """Triton lists an evicted version ready until its unload is through, after the eviction ended its
    processes: a pass then must not route requests to it again (they would find no stub)."""
    actions.recorder.unloaded.clear()
    actions.evict(TRITON, "old", 1)  # its eviction is running
    desired = Desired(on={"i": {"old": 1}}, holders={1: frozenset({"i"})}, recorded={})
    seen = InstanceObservation("i", ready=True, checked_at=datetime.now(UTC), models={"old": "READY"})
    actions.observed.placement_changed(("i", 1), "unloading", None)
    actions.converge(TRITON, seen, desired, {"old": (1, "ready")}, {"i": seen})
    assert (1, "ready", None) not in actions.noted
    assert actions.recorder.loaded == [], "nor loaded while it is being evicted"
    actions.recorder.release.set()
    actions.recorder.unloaded.set()
    assert actions.wait_idle(5)
    actions.converge(TRITON, seen, desired, {"old": (1, "ready")}, {"i": seen})
    assert (1, "ready", None) in actions.noted, "shown ready again by a pass once no eviction runs"


def test_loads_in_flight_count_the_load_calls_triton_is_running(actions: Any) -> None:
    """`cp_residency_loads_in_flight` (it stayed 0: nothing counted the loads)."""
    from collections import Counter

    from control_plane.residency.manager import Residency

    residency = Residency(session_factory=None, inflight=Counter())
    actions.residency = residency
    during: list[int] = []

    def load_model(name: str) -> None:
        during.append(residency.stats.loads_in_flight)

    def fail(name: str) -> None:
        during.append(residency.stats.loads_in_flight)
        raise RuntimeError("Triton said no")

    endpoint: Any = SimpleNamespace(name="i", client=SimpleNamespace(load_model=load_model))
    Actions._load(actions, endpoint, "m", 7, written=True)
    endpoint.client.load_model = fail
    Actions._load(actions, endpoint, "m", 8, written=True)
    assert during == [1, 1] and residency.stats.loads_in_flight == 0
    residency.stop()


def test_an_eviction_planned_while_its_version_has_another_action_running_runs_after_it(actions: Any) -> None:
    """A pass chose a version whose previous eviction was still finishing (kept: a request had asked for
    it again). The new eviction was dropped while the pass had written the placement desired absent:
    nothing unloaded the version, later passes counted it as leaving, and a version waiting for its room
    never loaded (found with two replicas under load)."""
    actions.recorder.outcome = False
    actions.evict(TRITON, "old", 1)  # the previous pass's, still running
    actions.evict(TRITON, "old", 1)  # this pass's
    assert actions.unloading_on("i") == {1}
    actions.recorder.outcome = True
    actions.recorder.release.set()
    assert actions.wait_idle(5), "idle once both are over (the second is started as the first is forgotten)"
    assert actions.recorder.evictions == 2, "the second eviction ran once the first was over"


def test_a_version_kept_by_its_eviction_is_not_loaded_again_by_a_pass_that_saw_it_leaving(
    actions: Any,
) -> None:
    """Triton reloads a model it has loaded (a second stub beside the first): a pass that counted the
    version missing while its eviction ran must not load it once the eviction kept it."""
    from unittest.mock import MagicMock

    calls: list[str] = []
    endpoint: Any = SimpleNamespace(name="i", client=SimpleNamespace(load_model=calls.append))
    actions.session_factory = MagicMock()  # `_keep`'s write (the registry is not what this tests)
    probed = time.monotonic()
    Actions._keep(actions, "i", 7)
    assert Actions._load(actions, endpoint, "m", 7, since=probed) is True
    assert calls == [], "kept loaded after the probe: not loaded again"
    assert Actions._load(actions, endpoint, "m", 7, since=time.monotonic()) is True
    assert calls == ["m"], "kept before the pass looked: a load now is a real one"
