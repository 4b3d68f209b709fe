"""Prometheus metrics of the data plane (one registry per app, so tests and replicas don't collide).

The hot path (one call to ``observe()`` and an in-flight ``inc()``/``dec()`` per request) does plain
dict/int/float work with no locks: every call comes from the one event-loop thread. A scrape, on
whatever thread it runs, reads the same records through one custom collector; it may see one
request counted in one series and not yet in another, never a crash.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as _prom_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_REQUESTS = "cp_inference_requests"  # exported as cp_inference_requests_total
_REQUESTS_LABELS = ("tenant", "model", "version", "protocol", "status")
_LATENCY = "cp_inference_request_seconds"
_UPSTREAM = "cp_inference_upstream_seconds"
_HIST_LABELS = ("tenant", "model", "protocol")
_IN_FLIGHT = "cp_inference_in_flight"
# `le` label values, the last one for the +Inf bucket; bisect_left(BUCKETS, x) indexes these directly
# (le is inclusive: an observation equal to a bound lands in that bound's bucket).
_LE = (*(floatToGoString(b) for b in BUCKETS), "+Inf")  # type: ignore[no-untyped-call]

_SeriesKey = tuple[str, str, str, str, int | str]
_Labels = tuple[str, ...]


class _Hist:
    """Non-cumulative bucket counts and sum of one histogram series."""

    __slots__ = ("buckets", "created", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(_LE)
        self.sum = 0.0
        self.created = time.time()


class _Series:
    """Request count of one (tenant, model, version, protocol, status), with its histogram records."""

    __slots__ = ("count", "created", "latency", "upstream")

    def __init__(self, latency: _Hist, upstream: _Hist | None) -> None:
        self.count = 0
        self.created = time.time()
        self.latency = latency
        self.upstream = upstream  # looked up the first time this series has an upstream time


class InFlight:
    """A gauge value, bumped by the one event-loop thread."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        """Add `amount` (default 1)."""
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        """Subtract `amount` (default 1)."""
        self.value -= amount


class InFlightFamily:
    """The in-flight gauge by protocol; `labels()` hands out one `InFlight` per protocol, to keep."""

    def __init__(self) -> None:
        self.children: dict[str, InFlight] = {}

    def labels(self, protocol: str) -> InFlight:
        """The gauge of `protocol` (created at 0 on first use)."""
        child = self.children.get(protocol)
        if child is None:
            child = self.children.setdefault(protocol, InFlight())
        return child


class _Collector:
    """Turns the records of one `DataPlaneMetrics` into metric families at scrape time."""

    def __init__(self, metrics: DataPlaneMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        """The families this collector exports (names only, for the registry's clash check)."""
        return [
            CounterMetricFamily(_REQUESTS, "", labels=_REQUESTS_LABELS),
            HistogramMetricFamily(_LATENCY, "", labels=_HIST_LABELS),
            HistogramMetricFamily(_UPSTREAM, "", labels=_HIST_LABELS),
            GaugeMetricFamily(_IN_FLIGHT, "", labels=("protocol",)),
        ]

    def collect(self) -> Iterable[Metric]:
        """Current values, in the same shape prometheus_client's Counter/Histogram/Gauge give."""
        return self._families()

    def _families(self) -> list[Metric]:
        m = self._metrics
        created = _prom_metrics._use_created
        requests = CounterMetricFamily(_REQUESTS, "Inference requests by outcome", labels=_REQUESTS_LABELS)
        for labels, series in _items(m._series_by_labels):
            requests.add_metric(labels, float(series.count), series.created if created else None)
        return [
            requests,
            _histogram(_LATENCY, "Whole request time in the control plane", m._latency, created),
            _histogram(_UPSTREAM, "Time waiting for Triton", m._upstream, created),
            _gauge(m.in_flight),
        ]


def _histogram(name: str, doc: str, hists: dict[_Labels, _Hist], created: bool) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=_HIST_LABELS)
    for labels, hist in _items(hists):
        counts = list(hist.buckets)  # one copy, so the cumulative sums below stay consistent
        acc = 0.0
        cumulative: list[tuple[str, float]] = []
        for le, n in zip(_LE, counts, strict=True):
            acc += n
            cumulative.append((le, acc))
        family.add_metric(labels, cumulative, hist.sum)
        if created:
            label_dict = dict(zip(_HIST_LABELS, labels, strict=True))
            family.samples.append(Sample(name + "_created", label_dict, hist.created))
    return family


K = TypeVar("K")
V = TypeVar("V")


def _items(series: dict[K, V]) -> list[tuple[K, V]]:
    """A copy of a dict the hot path adds to without a lock. Copying holds the GIL, but a garbage
    collection during the copy can run another thread, which may add a series: copy again then."""
    while True:
        try:
            return list(series.items())
        except RuntimeError:  # "dictionary changed size during iteration"
            continue


def _gauge(in_flight: InFlightFamily) -> GaugeMetricFamily:
    family = GaugeMetricFamily(_IN_FLIGHT, "Requests being served", labels=("protocol",))
    for protocol, child in _items(in_flight.children):
        family.add_metric((protocol,), child.value)
    return family


@dataclass
class DataPlaneMetrics:
    """Requests by tenant/model/version/status, latency of the whole request and of the upstream call."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        # What observe() looks up: keyed by the status as passed (int or str), so no str() per request;
        # 200 and "200" are two keys of one record.
        self._series: dict[_SeriesKey, _Series] = {}
        # The same records once each, by exported label values (what the collector reads).
        self._series_by_labels: dict[_Labels, _Series] = {}
        self._latency: dict[_Labels, _Hist] = {}
        self._upstream: dict[_Labels, _Hist] = {}
        self.in_flight = InFlightFamily()
        self.http_in_flight = self.in_flight.labels("http")  # looked up once, not per request
        self.registry.register(_Collector(self))

    def observe(
        self,
        *,
        tenant: str,
        model: str,
        version: str,
        protocol: str,
        status: int | str,
        total_s: float,
        upstream_s: float | None,
    ) -> None:
        """Record one finished request."""
        series = self._series.get((tenant, model, version, protocol, status))
        if series is None:
            series = self._new_series(tenant, model, version, protocol, status)
        series.count += 1
        hist = series.latency
        hist.buckets[bisect_left(BUCKETS, total_s)] += 1
        hist.sum += total_s
        if upstream_s is not None:
            hist = series.upstream or self._upstream_of(series, tenant, model, protocol)
            hist.buckets[bisect_left(BUCKETS, upstream_s)] += 1
            hist.sum += upstream_s

    def _new_series(self, tenant: str, model: str, version: str, protocol: str, status: int | str) -> _Series:
        labels = (tenant, model, version, protocol, str(status))
        series = self._series_by_labels.get(labels)
        if series is None:
            hist_labels = (tenant, model, protocol)
            latency = self._latency.get(hist_labels)
            if latency is None:
                latency = self._latency.setdefault(hist_labels, _Hist())
            series = _Series(latency, self._upstream.get(hist_labels))
            self._series_by_labels[labels] = series
        self._series[(tenant, model, version, protocol, status)] = series
        return series

    def _upstream_of(self, series: _Series, tenant: str, model: str, protocol: str) -> _Hist:
        hist_labels = (tenant, model, protocol)
        hist = self._upstream.get(hist_labels)
        if hist is None:
            hist = self._upstream.setdefault(hist_labels, _Hist())
        series.upstream = hist
        return hist
