"""Prometheus metrics of residency: resident versions and bytes per instance, budgets, hits, misses,
cold-start latency, evictions by reason, loads in flight, memory not given back after an unload.

Plain numbers updated by the data plane (hits: one integer add on the hot path) and the reconcile
loop; a custom collector turns them into metric families at scrape time.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

COLD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_LE = (*(floatToGoString(b) for b in COLD_BUCKETS), "+Inf")  # type: ignore[no-untyped-call]


class ResidencyStats:
    """Counters and gauges of residency (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.hits = 0  # requests whose version was resident (the data plane adds to it)
        self.misses = 0  # requests that had to wait for a load
        self.abandoned = 0  # of those, the ones whose clients went away while they waited
        self.cold_buckets = [0] * len(_LE)
        self.cold_sum = 0.0
        self.cold_failed = 0  # waits that ended in 503 (timeout or failed load)
        self.shadow_skipped = 0  # mirrors skipped because the shadow version was not resident
        self.loads_in_flight = 0
        self.evictions: Counter[tuple[str, str]] = Counter()  # (instance, reason)
        self.resident_versions: dict[str, int] = {}
        self.resident_bytes: dict[str, int] = {}
        self.budget_bytes: dict[str, int] = {}
        self.pinned_over_bytes: dict[str, int] = {}
        self.unreturned: dict[str, int] = {}  # Triton model name -> bytes an unload did not give back

    def cold_start(self, seconds: float, *, ok: bool) -> None:
        """One request that waited for a load, and how long it waited."""
        with self._lock:
            self.misses += 1
            if not ok:
                self.cold_failed += 1
            self.cold_buckets[bisect_left(COLD_BUCKETS, seconds)] += 1
            self.cold_sum += seconds

    def gave_up(self) -> None:
        """One request that waited for a load until its client went away (a miss, not a cold start)."""
        with self._lock:
            self.misses += 1
            self.abandoned += 1

    def evicted(self, instance: str, reason: str, *, size: int = 0) -> None:
        """Count an eviction; the instance holds one version and `size` bytes less than its last pass
        counted (shown at once, not at the next pass: that may be the period away)."""
        with self._lock:
            self.evictions[(instance, reason)] += 1
            if instance in self.resident_bytes:
                self.resident_bytes[instance] = max(0, self.resident_bytes[instance] - size)
                self.resident_versions[instance] = max(0, self.resident_versions[instance] - 1)

    def loading(self, delta: int) -> None:
        """A load started (+1) or ended (-1)."""
        with self._lock:
            self.loads_in_flight += delta

    def over_budget(self, name: str) -> int | None:
        """Bytes the instance holds above its budget now (None: no budget accounted there)."""
        with self._lock:
            return self._over_budget().get(name)

    def _over_budget(self) -> dict[str, int]:
        """Instance -> bytes held above its budget (under the lock)."""
        return {
            name: max(0, used - self.budget_bytes.get(name, 0)) for name, used in self.resident_bytes.items()
        }

    def instance(self, name: str, *, versions: int, used: int, budget: int, pinned_over: int) -> None:
        """What an instance holds, as the last pass accounted it."""
        with self._lock:
            self.resident_versions[name] = versions
            self.resident_bytes[name] = used
            self.budget_bytes[name] = budget
            self.pinned_over_bytes[name] = pinned_over


def register(registry: CollectorRegistry, stats: ResidencyStats) -> None:
    """Export `stats` on `registry`."""
    registry.register(_Collector(stats))


class _Collector:
    def __init__(self, stats: ResidencyStats) -> None:
        self.stats = stats

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())

    def collect(self) -> Iterable[Metric]:
        s = self.stats
        with s._lock:
            hits, misses, failed, skipped = s.hits, s.misses, s.cold_failed, s.shadow_skipped
            abandoned = s.abandoned
            buckets, total = list(s.cold_buckets), s.cold_sum
            evictions, in_flight = dict(s.evictions), s.loads_in_flight
            per_instance = {
                "cp_residency_resident_versions": dict(s.resident_versions),
                "cp_residency_resident_bytes": dict(s.resident_bytes),
                "cp_residency_budget_bytes": dict(s.budget_bytes),
                "cp_residency_pinned_over_budget_bytes": dict(s.pinned_over_bytes),
                "cp_residency_over_budget_bytes": s._over_budget(),
            }
            unreturned = dict(s.unreturned)
        yield CounterMetricFamily("cp_residency_hits", "requests whose version was resident", value=hits)
        yield CounterMetricFamily("cp_residency_misses", "requests that waited for a load", value=misses)
        yield CounterMetricFamily(
            "cp_residency_cold_failures",
            "cold requests answered 503 (wait over or load failed)",
            value=failed,
        )
        yield CounterMetricFamily(
            "cp_residency_abandoned",
            "cold requests whose clients went away while they waited (misses, not in the histogram)",
            value=abandoned,
        )
        yield CounterMetricFamily(
            "cp_residency_shadow_skipped", "mirrors skipped: shadow version not resident", value=skipped
        )
        yield GaugeMetricFamily("cp_residency_loads_in_flight", "loads running", value=in_flight)
        cumulative, acc = [], 0
        for le, count in zip(_LE, buckets, strict=True):
            acc += count
            cumulative.append((le, acc))
        yield HistogramMetricFamily(
            "cp_residency_cold_start_seconds",
            "time requests waited for their version to load",
            buckets=cumulative,
            sum_value=total,
        )
        family = CounterMetricFamily(
            "cp_residency_evictions", "versions evicted", labels=["triton", "reason"]
        )
        for (instance, reason), count in sorted(evictions.items()):
            family.add_metric([instance, reason], count)
        yield family
        docs = {
            "cp_residency_resident_versions": "versions loaded or loading on the instance",
            "cp_residency_resident_bytes": "memory of the versions loaded or loading on the instance",
            "cp_residency_budget_bytes": "the instance's memory budget",
            "cp_residency_pinned_over_budget_bytes": "pinned versions the budget cannot hold",
            "cp_residency_over_budget_bytes": "memory held above the budget now (busy or pinned versions "
            "measured bigger than counted)",
        }
        for name, values in per_instance.items():
            gauge = GaugeMetricFamily(name, docs[name], labels=["triton"])
            for instance, value in sorted(values.items()):
                gauge.add_metric([instance], value)
            yield gauge
        gauge = GaugeMetricFamily(
            "cp_residency_memory_unreturned_bytes", "memory an unload did not give back", labels=["model"]
        )
        for name, value in sorted(unreturned.items()):
            gauge.add_metric([name], value)
        yield gauge
