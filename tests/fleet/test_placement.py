"""The placement policy on its own: spread, sticky, replicas capped by the fleet, moves and trims."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from control_plane.fleet.placement import Servable, Slot, plan


def ready(*names: str) -> list[Slot]:
    return [Slot(name, eligible=True, keeps=True) for name in names]


def test_new_versions_go_to_the_instances_with_the_fewest_placements_then_the_fewest_bytes() -> None:
    versions = [Servable(v, replicas=1, size_bytes=10 * v) for v in range(1, 7)]
    placed = plan(versions, {}, ready("a", "b", "c"))
    assert Counter(name for names in placed.values() for name in names) == {"a": 2, "b": 2, "c": 2}
    assert plan([Servable(9, 1, 5)], {}, ready("a", "b"), base=[("a", 1), ("b", 1), ("b", 1)])[9] == {"a"}
    assert plan([Servable(9, 1, 5)], {}, ready("a", "b"), base=[("a", 100), ("b", 1)])[9] == {"b"}


def test_a_version_stays_where_it_is() -> None:
    current = {1: {"c"}}
    assert plan([Servable(1, 1)], current, ready("a", "b", "c"), base=[("c", 1)] * 5)[1] == {"c"}


def test_replicas_are_capped_by_the_instances_that_may_hold_placements() -> None:
    assert plan([Servable(1, 3)], {}, ready("a", "b"))[1] == {"a", "b"}
    assert plan([Servable(1, 64)], {}, [])[1] == frozenset()


def test_draining_instances_lose_their_placements_and_take_no_new_ones() -> None:
    slots = [Slot("a", eligible=False, keeps=False), *ready("b", "c")]
    assert plan([Servable(1, 1)], {1: {"a"}}, slots)[1] in ({"b"}, {"c"})
    assert plan([Servable(1, 2)], {1: {"a", "b"}}, slots)[1] == {"b", "c"}


def test_an_unavailable_instance_keeps_its_placements_until_the_move_delay_then_they_move() -> None:
    recent = [Slot("a", eligible=False, keeps=True), *ready("b")]
    assert plan([Servable(1, 1)], {1: {"a"}}, recent)[1] == {"a"}, "within the delay: no move"
    assert plan([Servable(2, 1)], {}, recent)[2] == {"b"}, "but no new placement on it"
    gone = [Slot("a", eligible=False, keeps=False), *ready("b")]
    assert plan([Servable(1, 1)], {1: {"a"}}, gone)[1] == {"b"}


def test_lowering_replicas_drops_unavailable_then_busiest_placements() -> None:
    slots = [Slot("a", eligible=False, keeps=True), *ready("b", "c")]
    assert plan([Servable(1, 2)], {1: {"a", "b", "c"}}, slots)[1] == {"b", "c"}
    busy = ready("a", "b", "c")
    assert plan([Servable(1, 1)], {1: {"a", "b"}}, busy, base=[("a", 1)] * 3)[1] == {"b"}


@given(
    replicas=st.lists(st.integers(1, 4), min_size=1, max_size=12),
    slots=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
def test_any_plan_meets_its_targets_and_only_uses_allowed_instances(
    replicas: list[int], slots: list[tuple[bool, bool]], seed: int
) -> None:
    fleet = [Slot(f"i{n}", eligible=e and k, keeps=k) for n, (e, k) in enumerate(slots)]
    names = [s.name for s in fleet]
    current = {v: {names[(v * seed + k) % len(names)] for k in range(v % 3)} for v in range(len(replicas))}
    versions = [Servable(v, r, v) for v, r in enumerate(replicas)]
    placed = plan(versions, current, fleet)
    keepers = {s.name for s in fleet if s.keeps}
    eligible = {s.name for s in fleet if s.eligible}
    for version in versions:
        chosen = placed[version.version_id]
        assert chosen <= keepers
        assert chosen - current[version.version_id] <= eligible, "new placements only on eligible instances"
        assert len(chosen) <= min(version.replicas, len(keepers))
        kept = current[version.version_id] & keepers
        assert len(chosen) >= min(version.replicas, len(kept | eligible)), "target met where possible"
        assert chosen >= kept or len(chosen) == version.replicas, "kept unless over target"
