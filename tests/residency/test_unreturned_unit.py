"""After an eviction, residency checks the version's memory came back (`Residency._check_returned`):
what its stubs held right before the unload, less what they or Triton itself still hold after it.
The processes' readings and the registry are replaced here; a real eviction is in test_residency.py."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest
from prometheus_client import CollectorRegistry

from control_plane.fleet.actions import BeforeUnload
from control_plane.residency import manager, metrics, repository, sizes
from control_plane.residency.manager import Residency

MIB = 2**20
ENDPOINT: Any = SimpleNamespace(name="i", http_url="http://127.0.0.1:1")


def _check(
    monkeypatch: pytest.MonkeyPatch, *, recorded: int, held: int, stubs_after: int, triton_growth: int
) -> tuple[Residency, list[int | None]]:
    written: list[int | None] = []
    monkeypatch.setattr(repository, "unreturned_record", lambda session, version_id: (recorded, None))
    monkeypatch.setattr(
        repository, "record_unreturned", lambda session, *, version_id, unreturned: written.append(unreturned)
    )
    monkeypatch.setattr(sizes, "stub_bytes", lambda pid, name: stubs_after)
    monkeypatch.setattr(sizes, "rss", lambda pid: 500 * MIB + triton_growth)
    residency = Residency(session_factory=MagicMock(), inflight=Counter())
    monkeypatch.setattr(residency, "_pid", lambda endpoint: 42)
    residency._check_returned(ENDPOINT, "m", 7, BeforeUnload(500 * MIB, held, freed=True))
    return residency, written


def test_a_version_that_freed_memory_after_its_load_is_not_reported_unreturned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Measured at 133 MiB at its load (an 80 MiB buffer in initialize, freed on first use), 46 MiB held
    at the eviction, all of it back: 87 MiB were reported unreturned, against the load-time size."""
    residency, written = _check(
        monkeypatch, recorded=133 * MIB, held=46 * MIB, stubs_after=0, triton_growth=0
    )
    assert written == [] and "m" not in residency.stats.unreturned


def test_memory_triton_kept_after_the_unload_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    residency, written = _check(
        monkeypatch, recorded=46 * MIB, held=46 * MIB, stubs_after=0, triton_growth=40 * MIB
    )
    assert written == [40 * MIB] and residency.stats.unreturned["m"] == 40 * MIB


def test_without_a_reading_before_the_unload_the_recorded_size_is_expected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No stub was seen before the unload (a backend without stubs): the recorded size is what should
    come back, and Triton giving nothing back is reported."""
    _, written = _check(monkeypatch, recorded=46 * MIB, held=0, stubs_after=0, triton_growth=0)
    assert written == [46 * MIB]


def test_an_eviction_takes_its_version_off_the_instance_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The instance's resident bytes and versions (API and metrics) stayed at what the pass that chose the
    eviction counted, over the budget, until a later pass: up to the period."""
    residency, _ = _check(monkeypatch, recorded=46 * MIB, held=46 * MIB, stubs_after=0, triton_growth=0)
    freed: list[bool] = []
    residency.reconciler = SimpleNamespace(  # type: ignore[assignment]
        budgets=SimpleNamespace(sizes={7: 46 * MIB}), freed=lambda room: freed.append(room)
    )
    residency.stats.instance("i", versions=4, used=268 * MIB, budget=200 * MIB, pinned_over=0)
    assert residency.stats.over_budget("i") == 68 * MIB and residency.stats.over_budget("j") is None
    residency.evicted(ENDPOINT, "m", 7, BeforeUnload(500 * MIB, 46 * MIB, freed=True), "lru")
    assert residency.stats.resident_bytes["i"] == 222 * MIB and residency.stats.resident_versions["i"] == 3
    assert residency.stats.evictions[("i", "lru")] == 1 and freed == [True]
    assert residency.stats.over_budget("i") == 22 * MIB, "still over: shown (and exported) as such"
    registry = CollectorRegistry()
    metrics.register(registry, residency.stats)
    assert registry.get_sample_value("cp_residency_over_budget_bytes", {"triton": "i"}) == 22 * MIB


def test_a_stub_slow_to_exit_gets_another_pass_once_it_is_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A version unloaded (not evicted) is counted again by a pass `STUB_EXIT_S` later; a stub still
    running then (a busy machine) was counted as resident until the period's pass. Now it is looked at
    again until it is gone (here: at the third look), with one pass each time, and no longer after."""
    monkeypatch.setattr(manager, "STUB_EXIT_S", 0.05)
    looks: list[str] = []  # instances looked at

    def live_sizes(endpoint: Any) -> dict[str, int]:
        looks.append(endpoint.name)
        return {"m": MIB} if len(looks) < 3 else {}

    monkeypatch.setattr(sizes, "end_orphans", lambda: None)
    residency = Residency(session_factory=None, inflight=Counter())
    monkeypatch.setattr(residency, "live_sizes", live_sizes)
    reconciler = MagicMock()
    residency.reconciler = reconciler
    residency.unloaded(ENDPOINT, "m")
    deadline = time.monotonic() + 5
    while reconciler.trigger.call_count < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # a fourth look would have come by now
    assert looks == ["i", "i", "i"] and reconciler.trigger.call_count == 3
    assert residency._exiting == {} and residency._recount is None


def test_a_stub_that_never_exits_is_looked_at_for_a_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "STUB_EXIT_S", 0.02)
    monkeypatch.setattr(manager, "STUB_EXIT_MAX_S", 0.2)
    monkeypatch.setattr(sizes, "end_orphans", lambda: None)
    residency = Residency(session_factory=None, inflight=Counter())
    monkeypatch.setattr(residency, "live_sizes", lambda endpoint: {"m": MIB})
    residency.reconciler = MagicMock()
    residency.unloaded(ENDPOINT, "m")
    deadline = time.monotonic() + 5
    while (residency._exiting or residency._recount is not None) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert residency._exiting == {} and residency._recount is None
    assert 5 <= residency.reconciler.trigger.call_count <= 15
