"""Live per-model figures for the console, from this process's own Prometheus records.

Each poll reads the data plane's collector (requests by status, the whole-request latency histogram),
keeps the reading for a minute, and compares it with the oldest one of that minute: requests per second,
the share of answers that were neither 2xx nor gRPC OK, and p50/p99 interpolated within the histogram's
buckets (as Prometheus' `histogram_quantile` does). Before a second reading exists, they are since
start-up. The request total is always since start-up.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

REQUESTS = "cp_inference_requests"
LATENCY = "cp_inference_request_seconds"
WINDOW_S = 60.0
MIN_GAP_S = 0.5  # polls closer than this reuse the last reading

ModelKey = tuple[str, str]  # (tenant, model)


@dataclass
class _Counts:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count


@dataclass(frozen=True)
class ModelFigures:
    """One model's figures over the window."""

    tenant: str
    model: str
    total: int  # since this process started
    requests: int  # within the window
    window_s: float | None  # None: since start-up (no earlier reading yet)
    rate_per_s: float | None
    error_rate: float | None
    p50_s: float | None
    p99_s: float | None


def read_counts(registry: CollectorRegistry) -> dict[ModelKey, _Counts]:
    """Cumulative requests, non-2xx answers and latency buckets per (tenant, model), all protocols."""
    counts: dict[ModelKey, _Counts] = {}
    for family in registry.collect():
        if family.name not in (REQUESTS, LATENCY):
            continue
        for sample in family.samples:
            key = (sample.labels.get("tenant", ""), sample.labels.get("model", ""))
            if sample.name == REQUESTS + "_total":
                entry = counts.setdefault(key, _Counts())
                entry.requests += sample.value
                if not _succeeded(sample.labels.get("status", "")):
                    entry.errors += sample.value
            elif sample.name == LATENCY + "_bucket":
                buckets = counts.setdefault(key, _Counts()).buckets
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return counts


def _succeeded(status: str) -> bool:
    """An HTTP 2xx, or gRPC's OK (gRPC requests are counted by their status code's name)."""
    return status.startswith("2") or status == "OK"


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative buckets, linear within a bucket; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bound: the best we know is that bound
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


class LiveStats:
    """Readings of one registry over the last minute, and the figures they give."""

    def __init__(self, registry: CollectorRegistry, *, clock: Callable[[], float] = time.monotonic):
        self.registry = registry
        self._clock = clock
        self._lock = threading.Lock()
        self._readings: deque[tuple[float, dict[ModelKey, _Counts]]] = deque()

    def figures(self, *, tenant: str | None = None) -> list[ModelFigures]:
        """Every model's figures (only `tenant`'s when given), by tenant and model name."""
        now, current, base = self._read()
        out = []
        for key in sorted(current):
            if tenant is not None and key[0] != tenant:
                continue
            out.append(_figures(key, current[key], base[1].get(key) if base else None, now, base))
        return out

    def _read(
        self,
    ) -> tuple[float, dict[ModelKey, _Counts], tuple[float, dict[ModelKey, _Counts]] | None]:
        with self._lock:
            now = self._clock()
            if self._readings and now - self._readings[-1][0] < MIN_GAP_S:
                now, current = self._readings[-1]
            else:
                current = read_counts(self.registry)
                self._readings.append((now, current))
            while len(self._readings) > 1 and now - self._readings[0][0] > WINDOW_S:
                self._readings.popleft()
            base = self._readings[0] if self._readings[0][0] < now else None
            return now, current, base


def _figures(
    key: ModelKey,
    current: _Counts,
    earlier: _Counts | None,
    now: float,
    base: tuple[float, object] | None,
) -> ModelFigures:
    """Figures from the difference between two readings (or the totals when there is one)."""
    before = earlier or _Counts()
    requests = current.requests - before.requests
    buckets = {b: c - before.buckets.get(b, 0.0) for b, c in current.buckets.items()}
    window = now - base[0] if base is not None else None
    return ModelFigures(
        tenant=key[0],
        model=key[1],
        total=int(current.requests),
        requests=int(requests),
        window_s=window,
        rate_per_s=requests / window if window else None,
        error_rate=(current.errors - before.errors) / requests if requests > 0 else None,
        p50_s=quantile(0.5, buckets),
        p99_s=quantile(0.99, buckets),
    )
