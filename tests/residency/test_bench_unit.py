"""The residency benchmark's own arithmetic: the ideal LRU it compares with, and where the measured hit
rate parts from it."""

from __future__ import annotations

from bench.residency import compare_with_ideal, ideal_lru_hit_rate

MS = 1_000_000


def test_ideal_lru_hit_rate() -> None:
    assert ideal_lru_hit_rate([0, 1, 0, 2, 1, 0], capacity=2) == 1 / 6  # only the second 0 hits
    assert ideal_lru_hit_rate([0, 0, 0], capacity=1) == 2 / 3


def test_compare_with_ideal_tells_joined_loads_from_eviction_choices() -> None:
    records = [
        (0.0, 0, 200, 300 * MS),  # m0 cold: the ideal misses too
        (0.1, 0, 200, 250 * MS),  # m0 again while its load is under way: an ideal hit that waited
        (0.5, 1, 200, 5 * MS),  # m1 warm here, a miss for the ideal (capacity 1): gained
        (0.6, 0, 200, 300 * MS),  # m0 cold: the ideal evicted it for m1, a miss there too
        (1.0, 0, 200, 400 * MS),  # m0 cold again, its earlier load long done: an ideal hit missed here
        (1.1, 0, 503, 1 * MS),  # failed: neither
    ]
    assert compare_with_ideal(records, capacity=1, threshold_ns=50 * MS) == (1, 1, 1)
