"""Which Triton instance a request goes to, and what a failure to reach one changes.

Routes (Triton model name -> the instances it is ready on) come from the routing table; a model with
none known goes to any instance. Among several, the one with the fewest requests outstanding (HTTP
and gRPC together; ties in turn), skipping instances a request just failed to reach until the
reconcile loop has seen them ready again. With one candidate there is no choice to make, and no cost.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from control_plane.dataplane.h1client import ConnectionLost, H1Pool, PoolClosed
from control_plane.errors import ServiceUnavailable
from control_plane.fleet.instances import TritonEndpoint

log = logging.getLogger(__name__)
Retries = Counter[tuple[str, str]]  # (instance, protocol) -> requests retried after it failed


class TritonUnreachable(ServiceUnavailable):
    """No Triton answered."""


class Backend:
    """One Triton instance as the data plane uses it: its pool and requests outstanding there."""

    __slots__ = ("down_since", "grpc_url", "http_url", "name", "outstanding", "pool")

    def __init__(self, endpoint: TritonEndpoint, pool: H1Pool):
        self.name, self.http_url, self.grpc_url = endpoint.name, endpoint.http_url, endpoint.grpc_url
        self.pool = pool
        self.outstanding = 0  # requests sent and not answered (HTTP and gRPC), on the event loop only
        self.down_since = 0.0  # when a request last failed to reach it (0: not since it was seen ready)

    def serves(self, endpoint: TritonEndpoint) -> bool:
        """Whether this is `endpoint` at its current addresses."""
        return (self.http_url, self.grpc_url) == (endpoint.http_url, endpoint.grpc_url)


def retryable(exc: BaseException | None) -> bool:
    """Whether a request failed before any byte of an answer arrived (refused, reset, closed)."""
    if isinstance(exc, ConnectionLost):
        return not exc.answered and not isinstance(exc, PoolClosed)
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


class Balancer:
    """The instances, the routes, and the choice among them (see the module docstring)."""

    def __init__(self, *, on_down: Callable[[str], None] | None = None) -> None:
        self.on_down = on_down  # told the name of an instance a request failed to reach
        self.retries: Retries = Counter()
        self._placements: dict[str, tuple[str, ...]] = {}
        self._turn = 0
        self._endpoints: list[TritonEndpoint] = []
        self._backends: dict[str, Backend] = {}
        self._all: tuple[Backend, ...] = ()
        self._routes: dict[str, tuple[Backend, ...]] = {}

    def _pool(self, endpoint: TritonEndpoint) -> H1Pool:
        """The connection pool for an endpoint (the upstream's)."""
        raise NotImplementedError

    @property
    def endpoints(self) -> list[TritonEndpoint]:
        """The instances requests may go to."""
        return self._endpoints

    @endpoints.setter
    def endpoints(self, endpoints: list[TritonEndpoint]) -> None:
        self._endpoints = list(endpoints)
        every: list[Backend] = []
        for endpoint in self._endpoints:
            backend = self._backends.get(endpoint.name)
            if backend is None or not backend.serves(endpoint):
                backend = Backend(endpoint, self._pool(endpoint))  # new, or at a new address
            every.append(backend)
        self._backends = {backend.name: backend for backend in every}
        self._all = tuple(every)
        self._rebuild_routes()

    def route(self, placements: Mapping[str, tuple[str, ...]]) -> None:
        """Take the instances each Triton model is ready on (from a fresh routing table)."""
        self._placements = dict(placements)
        self._rebuild_routes()

    def _rebuild_routes(self) -> None:
        backends = self._backends
        routes: dict[str, tuple[Backend, ...]] = {}
        for name, instances in self._placements.items():
            ready = tuple(backends[i] for i in instances if i in backends)
            if ready:
                routes[name] = ready
        self._routes = routes  # one assignment: readers see the old or the new mapping

    def seen_ready(self, names: Iterable[str], probed_at: float) -> None:
        """Instances the reconcile loop found ready in a probe started at `probed_at` (monotonic)."""
        for name in names:
            backend = self._backends.get(name)
            if backend is not None and 0.0 < backend.down_since < probed_at:
                backend.down_since = 0.0

    def pick(self) -> TritonEndpoint:
        """Any Triton endpoint (in turn)."""
        return self._endpoint(self.choose(None))

    def choose(self, triton_name: str | None, *, avoid: Backend | None = None) -> Backend:
        """The instance for a request to `triton_name` (see the module docstring); 503 if none."""
        candidates = self._routes.get(triton_name, self._all) if triton_name is not None else self._all
        if len(candidates) == 1 and avoid is None:
            return candidates[0]  # one instance: no choice to make
        if not candidates:
            raise TritonUnreachable("no Triton instance is configured", retry_after=5)
        self._turn += 1
        count = len(candidates)
        best: Backend | None = None
        for offset in range(count):
            backend = candidates[(self._turn + offset) % count]
            if backend is avoid or backend.down_since:
                continue
            if best is None or backend.outstanding < best.outstanding:
                best = backend
        if best is None:
            if avoid is not None:
                raise TritonUnreachable("no other Triton instance to retry on", retry_after=1)
            best = candidates[self._turn % count]  # all down: try one anyway (503 if it is)
        return best

    def _endpoint(self, backend: Backend) -> TritonEndpoint:
        return next(e for e in self._endpoints if e.name == backend.name)

    def failed(self, backend: Backend) -> None:
        """A request could not reach `backend`: avoid it until the loop sees it ready again."""
        if not backend.down_since:
            backend.down_since = time.monotonic()
            log.warning("Triton %s at %s failed a request; routing around it", backend.name, backend.http_url)
            if self.on_down is not None:
                self.on_down(backend.name)

    def after_failure(
        self, backend: Backend, triton_name: str | None, protocol: str, *, retry: bool = True
    ) -> Backend | None:
        """A request failed to reach `backend`: route around it; the instance to retry on, if any."""
        self.failed(backend)
        if not retry or len(self._all) < 2:
            return None
        try:
            other = self.choose(triton_name, avoid=backend)
        except TritonUnreachable:
            return None
        self.retries[(backend.name, protocol)] += 1
        return other

    def retry_counts(self) -> dict[tuple[str, str], int]:
        """A copy of the retry counters, safe to take from another thread (the scrape's)."""
        for _ in range(5):
            try:
                return dict(self.retries)
            except RuntimeError:  # grew while being copied: try again
                continue
        return {}
