"""The budget policy as a pure function: LRU, in-flight and pinned protection, tenant share, waiting."""

from __future__ import annotations

from control_plane.residency.policy import REASONS, Entry, decide
from control_plane.residency.sizes import _stub_model, estimate, from_statistics, last_inference_s


def _e(version_id: int, *, used: float, tenant: str = "a", size: int = 10, **flags: bool) -> Entry:
    return Entry(version_id, tenant, size, last_used=used, **flags)


def test_a_version_that_fits_is_admitted_without_evictions() -> None:
    decision = decide([_e(1, used=1)], [_e(2, used=5)], budget=20)
    assert (decision.admit, decision.evict, decision.wait) == ([2], [], [])


def test_the_least_recently_used_idle_version_is_evicted() -> None:
    resident = [_e(1, used=3), _e(2, used=1), _e(3, used=2)]
    decision = decide(resident, [_e(4, used=9)], budget=30)
    assert (decision.admit, decision.evict) == ([4], [2])


def test_busy_and_pinned_versions_are_never_victims() -> None:
    resident = [_e(1, used=1, busy=True), _e(2, used=2, pinned=True), _e(3, used=3)]
    decision = decide(resident, [_e(4, used=9)], budget=30)
    assert decision.evict == [3]


def test_nothing_is_evicted_when_even_everything_evictable_would_not_make_room() -> None:
    resident = [_e(1, used=1, busy=True), _e(2, used=2, pinned=True), _e(3, used=3, size=5)]
    decision = decide(resident, [_e(4, used=9, size=20)], budget=30)
    assert (decision.admit, decision.evict, decision.wait) == ([], [], [4])


def test_a_pinned_set_the_budget_cannot_hold_is_reported() -> None:
    decision = decide([_e(1, used=1, pinned=True)], [_e(2, used=2, pinned=True)], budget=15)
    assert decision.wait == [2] and decision.pinned_over == 10


def test_a_tenant_over_its_share_is_evicted_first_even_if_more_recent() -> None:
    resident = [_e(1, used=1, tenant="quiet"), _e(2, used=5, tenant="busy"), _e(3, used=6, tenant="busy")]
    decision = decide(resident, [_e(4, used=9, tenant="busy")], budget=30, share=0.5)
    assert decision.evict == [2]  # "quiet"'s older model stays: "busy" holds 20 of 30
    assert decide(resident, [_e(4, used=9, tenant="busy")], budget=30).evict == [1]  # no share: plain LRU


def test_versions_admitted_in_one_round_are_not_evicted_for_each_other() -> None:
    decision = decide([_e(1, used=1)], [_e(2, used=5), _e(3, used=6)], budget=20)
    assert decision.admit == [2, 3] and decision.evict == [1]
    decision = decide([], [_e(2, used=5), _e(3, used=6)], budget=10)
    assert decision.admit == [2] and decision.evict == [] and decision.wait == [3]


def test_resident_over_budget_after_a_measurement_shrinks_back() -> None:
    decision = decide([_e(1, used=1, size=15), _e(2, used=2, size=15)], [], budget=20)
    assert decision.evict == [1]


def test_sizes_from_statistics_stub_command_lines_and_estimates() -> None:
    stats = [{"name": "m", "last_inference": 1500, "memory_usage": [{"byte_size": 7}, {"byte_size": 3}]}]
    assert from_statistics(stats) == 10 and last_inference_s(stats) == {"m": 1.5}
    args = [
        b"/x/triton_python_backend_stub",
        b"/r/t--m--v1/1/model.py",
        b"shm",
        b"1",
        b"t--m--v1_0_0",
        b"DEFAULT",
    ]
    assert _stub_model(args) == "t--m--v1"
    assert _stub_model([b"/usr/bin/python"]) is None
    assert estimate(100, [(1000, 100), (2000, 100), (3000, 100)]) == 2000


def test_headroom_evicts_idle_versions_ahead_of_the_next_load() -> None:
    resident = [_e(1, used=1), _e(2, used=2), _e(3, used=3)]
    assert decide(resident, [], budget=40, headroom=10).evict == []  # 30 held: 10 free already
    assert decide(resident, [], budget=35, headroom=10).evict == [1]
    assert decide(resident, [], budget=30, headroom=20).evict == []  # headroom >= half the budget: ignored


def test_a_tenant_its_new_version_takes_over_its_share_makes_room_from_its_own() -> None:
    """Two tenants within their shares (200 of 225 each); the greedy one asks for a third version: its own
    least recently used goes, not the quiet tenant's older one (which left greedy at 67% of the budget)."""
    resident = [
        _e(1, used=10, tenant="greedy", size=100),
        _e(2, used=11, tenant="greedy", size=100),
        _e(3, used=5, tenant="quiet", size=100),
        _e(4, used=12, tenant="quiet", size=100),
    ]
    decision = decide(resident, [_e(5, used=20, tenant="greedy", size=100)], budget=450, share=0.5)
    assert decision.admit == [5] and decision.evict == [1]
    assert decide(resident, [_e(5, used=20, tenant="greedy", size=100)], budget=450).evict == [3]  # plain LRU


def test_versions_idle_since_the_cutoff_are_evicted_first_whatever_the_shares() -> None:
    """A budget of two, shares of half: "quiet" holds one version, unused since 1; "busy" alternates
    two. By shares alone busy's versions evict each other on every switch while quiet's idle one stays."""
    resident = [_e(1, used=1, tenant="quiet"), _e(2, used=50, tenant="busy")]
    incoming = [_e(3, used=60, tenant="busy")]
    assert decide(resident, incoming, budget=20, share=0.5).evict == [2]
    assert decide(resident, incoming, budget=20, share=0.5, idle_before=40).evict == [1]
    used_since = [_e(1, used=45, tenant="quiet"), _e(2, used=50, tenant="busy")]
    assert decide(used_since, incoming, budget=20, share=0.5, idle_before=40).evict == [2], "share holds"
    # Among the idle, least recently used first, whichever tenant (shrinking to a lowered budget too).
    idle = [_e(1, used=5, tenant="a"), _e(2, used=3, tenant="b"), _e(3, used=50, tenant="a")]
    assert decide(idle, [], budget=20, share=0.5, idle_before=40).evict == [2]


def test_pinned_versions_resident_over_a_lowered_budget_are_reported() -> None:
    decision = decide([_e(1, used=1, pinned=True), _e(2, used=2, pinned=True)], [], budget=15)
    assert decision.evict == [] and decision.pinned_over == 5
    assert decide([_e(1, used=1, pinned=True)], [], budget=15).pinned_over == 0


def test_each_eviction_says_why_it_was_chosen() -> None:
    """The reasons `cp_residency_evictions_total` counts: the order that picked a victim to make room, or
    the shrink of what is resident (over the budget as measured, or for the headroom)."""
    lru = decide([_e(1, used=3), _e(2, used=1)], [_e(3, used=9)], budget=20)
    assert lru.evict == [2] and lru.reasons == {2: "lru"}
    resident = [_e(1, used=1, tenant="quiet"), _e(2, used=5, tenant="busy"), _e(3, used=6, tenant="busy")]
    share = decide(resident, [_e(4, used=9, tenant="busy")], budget=30, share=0.5)
    assert share.reasons == {2: "tenant_share"}
    alone = [_e(1, used=1, tenant="busy"), _e(2, used=5, tenant="busy"), _e(3, used=6, tenant="busy")]
    one_tenant = decide(alone, [_e(4, used=9, tenant="busy")], budget=30, share=0.5)
    assert one_tenant.reasons == {1: "lru"}, "over its share, but the share chose what LRU would"
    idle = decide(
        [_e(1, used=10, tenant="a"), _e(2, used=30, tenant="b")], [_e(3, used=50)], budget=20, idle_before=20
    )
    assert idle.reasons == {1: "idle"}
    # Two victims for one arrival: the idle one first, then the least recently used of the rest.
    both = decide(
        [_e(1, used=10), _e(2, used=30), _e(3, used=35)], [_e(4, used=50, size=20)], budget=30, idle_before=20
    )
    assert (both.evict, both.reasons) == ([1, 2], {1: "idle", 2: "lru"})
    over = decide([_e(1, used=1, size=15), _e(2, used=2, size=15)], [], budget=20)
    assert over.reasons == {1: "over_budget"}
    ahead = decide([_e(1, used=1), _e(2, used=2), _e(3, used=3)], [], budget=35, headroom=10)
    assert ahead.reasons == {1: "headroom"}
    # 5 over the budget, with 10 to keep free: the first victim is for the budget, the next for the room.
    shrink = decide([_e(1, used=1), _e(2, used=2), _e(3, used=3), _e(4, used=4)], [], budget=35, headroom=10)
    assert shrink.reasons == {1: "over_budget", 2: "headroom"}
    assert set(lru.reasons) == set(lru.evict) and all(
        r in REASONS for d in (lru, share, idle, shrink) for r in d.reasons.values()
    )
