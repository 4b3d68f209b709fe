"""Per-tenant request rate (token bucket) and concurrency limits."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from control_plane.errors import AppError


class RateLimited(AppError):
    """429 with Retry-After."""

    status_code = 429
    kind = "RateLimited"


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class TenantLimits:
    """Token bucket (rate/s with a burst) and a cap on in-flight requests, per tenant; 0 disables one."""

    rate_per_s: float = 0.0
    burst: int = 0
    max_concurrency: int = 0
    noun: str = "request"  # what the refusals count: "request" (inference), "management API request"
    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    _in_flight: dict[int, int] = field(default_factory=dict)

    def check_rate(self, tenant_id: int) -> None:
        """Take one token or raise RateLimited with the seconds until the next one."""
        if self.rate_per_s <= 0:
            return
        now = time.monotonic()
        capacity = max(self.burst, 1)
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            bucket = self._buckets[tenant_id] = _Bucket(tokens=capacity, updated=now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * self.rate_per_s)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = math.ceil((1 - bucket.tokens) / self.rate_per_s)
            raise RateLimited(f"tenant {self.noun} rate over {self.rate_per_s:g}/s", retry_after=max(wait, 1))
        bucket.tokens -= 1

    def acquire(self, tenant_id: int) -> None:
        """Take one of the tenant's concurrent-request slots (see `release`), or raise RateLimited."""
        if self.max_concurrency <= 0:
            return
        current = self._in_flight.get(tenant_id, 0)
        if current >= self.max_concurrency:
            raise RateLimited(
                f"tenant has {current} {self.noun}s in flight (limit {self.max_concurrency})",
                retry_after=1,
            )
        self._in_flight[tenant_id] = current + 1

    def in_flight(self, tenant_id: int) -> int:
        """How many of the tenant's slots are taken."""
        return self._in_flight.get(tenant_id, 0)

    def release(self, tenant_id: int) -> None:
        """Give back a slot taken by `acquire`."""
        if self.max_concurrency > 0:
            self._in_flight[tenant_id] -= 1

    @contextmanager
    def slot(self, tenant_id: int) -> Iterator[None]:
        """Hold one of the tenant's concurrent-request slots for a block, or raise RateLimited."""
        self.acquire(tenant_id)
        try:
            yield
        finally:
            self.release(tenant_id)
