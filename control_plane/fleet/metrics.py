"""Prometheus metrics of the fleet: reconcile passes, loads, unloads, drift, instance health, retries.

The reconcile loop counts into `FleetStats` (plain numbers under a lock: a few updates per pass); a
custom collector turns them into metric families at scrape time, on the data plane's registry, next
to its own collector. The data plane's retries are read from the upstream when scraped. A Triton
instance is the label `triton`, not `instance`: Prometheus sets `instance` to the scrape target (and would
rename ours `exported_instance`).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_LE = (*(floatToGoString(b) for b in PASS_BUCKETS), "+Inf")  # type: ignore[no-untyped-call]


class FleetStats:
    """Counters and gauges the reconcile loop updates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.passes = 0
        self.pass_buckets = [0] * len(_LE)
        self.pass_sum = 0.0
        self.loads: Counter[tuple[str, str]] = Counter()  # (instance, ok|failed)
        self.unloads: Counter[str] = Counter()
        self.drift: dict[str, int] = {}  # instance -> placements not as desired at the last pass
        self.ready: dict[str, bool] = {}
        self.leader = False

    def passed(self, seconds: float) -> None:
        """Count one pass and its duration."""
        with self._lock:
            self.passes += 1
            self.pass_buckets[bisect_left(PASS_BUCKETS, seconds)] += 1
            self.pass_sum += seconds

    def loaded(self, instance: str, *, ok: bool) -> None:
        """Count a load by the loop."""
        with self._lock:
            self.loads[(instance, "ok" if ok else "failed")] += 1

    def unloaded(self, instance: str) -> None:
        """Count an unload by the loop."""
        with self._lock:
            self.unloads[instance] += 1

    def observed(self, instance: str, *, ready: bool, drift: int | None) -> None:
        """An instance's health and drift as the last pass found them."""
        with self._lock:
            self.ready[instance] = ready
            if drift is not None:
                self.drift[instance] = drift

    def forget(self, instance: str) -> None:
        """Drop the gauges of an instance that left the fleet."""
        with self._lock:
            self.ready.pop(instance, None)
            self.drift.pop(instance, None)


class FleetCollector:
    """Exports `FleetStats` and the data plane's retries by instance and protocol."""

    def __init__(self, stats: FleetStats, retries: Callable[[], Mapping[tuple[str, str], int]]) -> None:
        self._stats = stats
        self._retries = retries

    def describe(self) -> Iterable[Metric]:
        """The families this collector exports (names only)."""
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        """Current values."""
        s = self._stats
        with s._lock:
            passes = CounterMetricFamily("cp_reconcile_passes", "Reconcile passes")
            passes.add_metric((), s.passes)
            duration = HistogramMetricFamily("cp_reconcile_pass_seconds", "Duration of a reconcile pass")
            acc, buckets = 0.0, []
            for le, n in zip(_LE, s.pass_buckets, strict=True):
                acc += n
                buckets.append((le, acc))
            duration.add_metric((), buckets, s.pass_sum)
            loads = _counter(
                "cp_reconcile_loads", "Loads started by the loop", ("triton", "outcome"), s.loads
            )
            unloads = _counter("cp_reconcile_unloads", "Unloads by the loop", ("triton",), s.unloads)
            drift = _gauge("cp_reconcile_drift", "Placements not as desired at the last pass", s.drift)
            ready = _gauge("cp_fleet_instance_ready", "1 when the instance answered ready", s.ready)
            leader = GaugeMetricFamily("cp_reconcile_leader", "1 when this process leads the shared fleet")
            leader.add_metric((), 1.0 if s.leader else 0.0)
        retries = _counter(
            "cp_upstream_retries",
            "Requests retried on another instance (the first failed before any answer)",
            ("triton", "protocol"),
            dict(self._retries()),
        )
        return [passes, duration, loads, unloads, drift, ready, leader, retries]


def _counter(name: str, doc: str, labels: tuple[str, ...], values: Mapping[Any, int]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(key if isinstance(key, tuple) else (key,), float(value))
    return family


def _gauge(name: str, doc: str, values: Mapping[str, float | int | bool]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=("triton",))
    for instance, value in values.items():
        family.add_metric((instance,), float(value))
    return family


def register(
    registry: CollectorRegistry, stats: FleetStats, retries: Callable[[], Mapping[tuple[str, str], int]]
) -> None:
    """Export the fleet's metrics on `registry` (the one /metrics serves)."""
    registry.register(FleetCollector(stats, retries))
