"""After an eviction, residency checks the version's memory came back (`Residency._check_returned`):
what its stubs held right before the unload, less what they or Triton itself still hold after it.
The processes' readings and the registry are replaced here; a real eviction is in test_residency.py."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest

from control_plane.fleet.actions import BeforeUnload
from control_plane.residency import repository, sizes
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
