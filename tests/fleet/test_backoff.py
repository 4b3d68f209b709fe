"""Backoff per key: doubling delays up to a cap, forgotten on success."""

from __future__ import annotations

from control_plane.fleet.backoff import Backoff


def test_delays_double_up_to_the_cap_and_reset_on_success() -> None:
    now = [100.0]
    backoff = Backoff(initial_s=1.0, max_s=5.0, clock=lambda: now[0])
    assert backoff.due("a") and backoff.failures("a") == 0

    assert [backoff.failed("a") for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.failures("a") == 5 and not backoff.due("a") and backoff.due("b")
    now[0] += 4.9
    assert not backoff.due("a")
    now[0] += 0.1
    assert backoff.due("a")

    backoff.succeeded("a")
    assert backoff.failures("a") == 0 and backoff.failed("a") == 1.0
