"""Per-tenant request rate (token bucket) and concurrency limits."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from control_plane.errors import AppError

MAX_WAIT_S = 3600.0  # the longest Retry-After a rate limit gives (a tiny rate must not overflow it)


class RateLimited(AppError):
    """429 with Retry-After."""

    status_code = 429
    kind = "RateLimited"


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True, slots=True)
class OwnLimits:
    """A tenant's own limits (None: the default's; 0: unlimited), as the routing table carries them."""

    rate_per_s: float | None = None
    burst: int | None = None
    max_concurrency: int | None = None


@dataclass
class TenantLimits:
    """Token bucket (rate/s with a burst) and a cap on in-flight requests, per tenant; 0 disables one.
    These are the defaults; `own` holds the tenants that have limits of their own (`use` replaces it)."""

    rate_per_s: float = 0.0
    burst: int = 0
    max_concurrency: int = 0
    noun: str = "request"  # what the refusals count: "request" (inference), "management API request"
    own: dict[int, OwnLimits] = field(default_factory=dict)
    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    _in_flight: dict[int, int] = field(default_factory=dict)

    def use(self, own: dict[int, OwnLimits]) -> None:
        """Take the tenants' own limits (a new routing table's); a bucket keeps its tokens."""
        self.own = own

    def check_rate(self, tenant_id: int) -> None:
        """Take one token or raise RateLimited with the seconds until the next one."""
        rate, burst = self.rate_per_s, self.burst
        mine = self.own.get(tenant_id) if self.own else None
        if mine is not None:
            rate = rate if mine.rate_per_s is None else mine.rate_per_s
            burst = burst if mine.burst is None else mine.burst
        if rate <= 0:
            return
        now = time.monotonic()
        capacity = max(burst, 1)
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            bucket = self._buckets[tenant_id] = _Bucket(tokens=capacity, updated=now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens < 1:
            wait = math.ceil(min((1 - bucket.tokens) / rate, MAX_WAIT_S))
            raise RateLimited(f"tenant {self.noun} rate over {rate:g}/s", retry_after=max(wait, 1))
        bucket.tokens -= 1

    def acquire(self, tenant_id: int) -> None:
        """Take one of the tenant's concurrent-request slots (see `release`), or raise RateLimited. Slots are
        counted when there is no limit too, so a limit set while requests are in flight counts them."""
        most = self.max_concurrency
        mine = self.own.get(tenant_id) if self.own else None
        if mine is not None and mine.max_concurrency is not None:
            most = mine.max_concurrency
        current = self._in_flight.get(tenant_id, 0)
        if 0 < most <= current:
            raise RateLimited(f"tenant has {current} {self.noun}s in flight (limit {most})", retry_after=1)
        self._in_flight[tenant_id] = current + 1

    def in_flight(self, tenant_id: int) -> int:
        """How many of the tenant's slots are taken."""
        return self._in_flight.get(tenant_id, 0)

    def release(self, tenant_id: int) -> None:
        """Give back a slot taken by `acquire`."""
        current = self._in_flight.get(tenant_id, 0)
        if current > 1:
            self._in_flight[tenant_id] = current - 1
        else:
            self._in_flight.pop(tenant_id, None)

    @contextmanager
    def slot(self, tenant_id: int) -> Iterator[None]:
        """Hold one of the tenant's concurrent-request slots for a block, or raise RateLimited."""
        self.acquire(tenant_id)
        try:
            yield
        finally:
            self.release(tenant_id)
