"""Live figures from the data plane's metrics: windows, rates, error shares, quantiles."""

from __future__ import annotations

import math

import pytest

from control_plane.console.live import LiveStats, quantile, read_counts
from control_plane.dataplane.metrics import DataPlaneMetrics


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def observe(
    metrics: DataPlaneMetrics, *, model: str = "mlp", status: int = 200, seconds: float = 0.002
) -> None:
    """One finished request of tenant acme."""
    metrics.observe(
        tenant="acme",
        model=model,
        version="1",
        protocol="http",
        status=status,
        total_s=seconds,
        upstream_s=None,
    )


def test_quantile_interpolates_within_buckets_like_prometheus() -> None:
    buckets = {0.001: 0.0, 0.002: 10.0, 0.005: 20.0, math.inf: 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.002)
    assert quantile(0.25, buckets) == pytest.approx(0.0015)
    assert quantile(0.75, buckets) == pytest.approx(0.0035)
    assert quantile(0.5, {0.001: 0.0, math.inf: 0.0}) is None
    assert quantile(0.99, {0.001: 0.0, 10.0: 0.0, math.inf: 4.0}) == 10.0  # past the last bound


def test_counts_add_protocols_and_count_failures_as_errors() -> None:
    metrics = DataPlaneMetrics()
    observe(metrics)
    observe(metrics, status=404)
    metrics.observe(
        tenant="acme", model="mlp", version="2", protocol="grpc", status="OK", total_s=0.01, upstream_s=0.005
    )
    counts = read_counts(metrics.registry)[("acme", "mlp")]
    assert counts.requests == 3
    assert counts.errors == 1  # the 404; gRPC's OK is a success
    assert counts.buckets[math.inf] == 3


def test_first_reading_is_since_start_then_the_window_is_a_difference() -> None:
    metrics, clock = DataPlaneMetrics(), Clock()
    live = LiveStats(metrics.registry, clock=clock)
    for _ in range(4):
        observe(metrics, seconds=0.0008)
    (first,) = live.figures()
    assert (first.total, first.requests, first.window_s, first.rate_per_s) == (4, 4, None, None)
    assert first.error_rate == 0.0 and first.p50_s is not None and first.p50_s <= 0.001

    clock.now += 10
    for _ in range(9):
        observe(metrics, seconds=0.02)
    observe(metrics, status=503, seconds=0.02)
    (second,) = live.figures()
    assert (second.total, second.requests, second.window_s) == (14, 10, 10.0)
    assert second.rate_per_s == pytest.approx(1.0)
    assert second.error_rate == pytest.approx(0.1)
    assert second.p50_s is not None and 0.01 < second.p50_s <= 0.025  # only this window's requests

    clock.now += 0.1  # closer than the minimum gap: the last reading again
    assert live.figures() == [second]

    clock.now += 120  # the old readings fall out of the minute; nothing new happened
    live.figures()
    clock.now += 5
    (idle,) = live.figures()
    assert (idle.total, idle.requests, idle.rate_per_s, idle.error_rate, idle.p50_s) == (
        14,
        0,
        0.0,
        None,
        None,
    )


def test_figures_are_narrowed_to_a_tenant() -> None:
    metrics = DataPlaneMetrics()
    observe(metrics)
    metrics.observe(
        tenant="other", model="m", version="1", protocol="http", status=200, total_s=0.001, upstream_s=None
    )
    live = LiveStats(metrics.registry)
    assert [(f.tenant, f.model) for f in live.figures()] == [("acme", "mlp"), ("other", "m")]
    assert [(f.tenant, f.model) for f in live.figures(tenant="other")] == [("other", "m")]
