"""The residency benchmark's own arithmetic: the ideal LRU it compares with, where the measured hit rate
parts from it, and the entries of an answer's Server-Timing."""

from __future__ import annotations

import pytest

from bench.residency import compare_with_ideal, ideal_lru_hit_rate, metric, metric_by, timing_seconds

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


def test_timing_seconds_reads_one_entry_of_server_timing() -> None:
    assert timing_seconds("gateway;dur=1.250, triton;dur=25.500", "triton") == pytest.approx(0.0255)
    assert timing_seconds("triton;dur=3", "triton") == pytest.approx(0.003)
    assert timing_seconds("gateway;dur=2.0", "triton") == 0.0
    assert timing_seconds("", "triton") == 0.0
    cold = "gateway;dur=0.400, load;dur=130.000, triton;dur=17.000"
    assert timing_seconds(cold, "load") == pytest.approx(0.13)
    assert timing_seconds(cold, "gateway") == pytest.approx(0.0004)
    assert timing_seconds("preload;dur=5, load;dur=7", "load") == pytest.approx(0.007)


def test_scratch_database_is_empty_usable_and_dropped() -> None:
    """`bench.residency --postgres`: the registry goes in a database of its own on that server, gone after."""
    import psycopg

    from bench.stack import scratch_database
    from tests.conftest import ADMIN_URL

    with scratch_database(ADMIN_URL) as url:
        name = url.rsplit("/", 1)[1]
        assert name.startswith("cp_bench_") and url != ADMIN_URL
        with psycopg.connect(url) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
            assert tables == (0,)
    with psycopg.connect(ADMIN_URL) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None


def test_metric_sums_samples_and_metric_by_splits_them_by_a_label() -> None:
    text = "\n".join(
        [
            "# TYPE cp_residency_evictions_total counter",
            'cp_residency_evictions_total{triton="a",reason="lru"} 3.0',
            'cp_residency_evictions_total{triton="b",reason="lru"} 2.0',
            'cp_residency_evictions_total{reason="idle",triton="a"} 1.0',
            'cp_residency_evictions_created{triton="a",reason="lru"} 1.7e9',
            'cp_residency_hits_total{triton="a"} 9.0',
        ]
    )
    assert metric(text, "cp_residency_evictions_total") == 6.0
    assert metric_by(text, "cp_residency_evictions_total", "reason") == {"lru": 5, "idle": 1}
    assert metric_by(text, "cp_residency_evictions_total", "triton") == {"a": 4, "b": 2}
    assert metric_by(text, "cp_residency_hits_total", "reason") == {}
