"""Pooled keep-alive HTTP connections to the Triton fleet, with our errors at the boundary."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

import orjson

from control_plane.dataplane.h1client import ConnectionLost, H1Pool, PoolClosed, Response
from control_plane.dataplane.rewrite import hide_internal_name
from control_plane.errors import AppError, BadRequest, ServiceUnavailable, UpstreamTimeout
from control_plane.fleet.instances import TritonEndpoint
from control_plane.routing.router import ModelLoading, Resolved

log = logging.getLogger(__name__)


class TritonUnreachable(ServiceUnavailable):
    """No Triton answered."""


class BadGateway(AppError):
    """Triton answered something we cannot read, or failed in a way that is not the client's doing."""

    status_code = 502
    kind = "BadGateway"


# Triton answers 500 to requests its JSON parser refuses; those are the client's mistakes.
_CLIENT_MISTAKES = ("unable to parse", "failed to parse", "unexpected inference", "inference input")


class UpstreamResponse:
    """Triton's answer, body read whole; header names lower-case."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes):
        self.status, self.headers, self.body = status, headers, body


UpstreamCallback = Callable[[UpstreamResponse | AppError], None]
Retries = Counter[tuple[str, str]]  # (instance, protocol) -> requests retried after it failed


class Backend:
    """One Triton instance as the data plane uses it: its pool and requests outstanding there."""

    __slots__ = ("down_since", "grpc_url", "http_url", "name", "outstanding", "pool")

    def __init__(self, endpoint: TritonEndpoint, pool: H1Pool):
        self.name, self.http_url, self.grpc_url = endpoint.name, endpoint.http_url, endpoint.grpc_url
        self.pool = pool
        self.outstanding = 0  # requests sent and not answered (HTTP and gRPC), on the event loop only
        self.down_since = 0.0  # when a request last failed to reach it (0: not since it was seen ready)


def retryable(exc: BaseException | None) -> bool:
    """Whether a request failed before any byte of an answer arrived (refused, reset, closed)."""
    if isinstance(exc, ConnectionLost):
        return not exc.answered and not isinstance(exc, PoolClosed)
    return isinstance(exc, OSError) and not isinstance(exc, TimeoutError)


class Upstream:
    """Keep-alive pools to the Tritons; each request goes to an instance that has its version ready.

    Routes (Triton model name -> instances ready with it) come from the routing table; a model with
    none known goes to any instance. Among several, the one with the fewest requests outstanding
    (ties in turn), skipping instances a request just failed to reach until the reconcile loop has
    seen them ready again. A request that fails before any answer is retried once on another.
    """

    def __init__(
        self,
        endpoints: list[TritonEndpoint],
        *,
        timeout_s: float,
        on_down: Callable[[str], None] | None = None,
    ):
        self.timeout_s = timeout_s
        self.on_down = on_down  # told the name of an instance a request failed to reach
        self.retries: Retries = Counter()
        self._pools: dict[str, H1Pool] = {}
        self._placements: dict[str, tuple[str, ...]] = {}
        self._turn = 0
        self.endpoints = endpoints

    @property
    def endpoints(self) -> list[TritonEndpoint]:
        """The instances requests may go to."""
        return self._endpoints

    @endpoints.setter
    def endpoints(self, endpoints: list[TritonEndpoint]) -> None:
        self._endpoints = list(endpoints)
        old = getattr(self, "_backends", {})
        every: list[Backend] = []
        for endpoint in self._endpoints:
            backend = old.get(endpoint.name)
            if backend is None or (backend.http_url, backend.grpc_url) != (
                endpoint.http_url,
                endpoint.grpc_url,
            ):
                backend = Backend(endpoint, self._pool(endpoint))
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
        """The instance for a request to `triton_name` (see the class docstring); 503 if none."""
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

    def _pool(self, endpoint: TritonEndpoint) -> H1Pool:
        pool = self._pools.get(endpoint.http_url)
        if pool is None:
            pool = self._pools[endpoint.http_url] = H1Pool(endpoint.http_url)
        return pool

    def _endpoint(self, backend: Backend) -> TritonEndpoint:
        return next(e for e in self._endpoints if e.name == backend.name)

    def failed(self, backend: Backend) -> None:
        """A request could not reach `backend`: avoid it until the loop sees it ready again."""
        if not backend.down_since:
            backend.down_since = time.monotonic()
            log.warning("Triton %s at %s failed a request; routing around it", backend.name, backend.http_url)
            if self.on_down is not None:
                self.on_down(backend.name)

    def start(
        self,
        method: bytes,
        path: bytes,
        *,
        body: bytes | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        callback: UpstreamCallback,
        triton_name: str | None = None,
    ) -> None:
        """Send one request to a Triton; `callback` gets the response, or 503/504 as an AppError."""
        backend = self.choose(triton_name)
        self._send(backend, method, path, body, headers, callback, triton_name, False)

    def _send(
        self,
        backend: Backend,
        method: bytes,
        path: bytes,
        body: bytes | None,
        headers: Sequence[tuple[bytes, bytes]],
        callback: UpstreamCallback,
        triton_name: str | None,
        retried: bool,
    ) -> None:
        backend.outstanding += 1

        def settle(response: Response | None, exc: BaseException | None) -> None:
            backend.outstanding -= 1
            if response is not None:
                callback(UpstreamResponse(response[0], dict(response[1]), response[2]))
                return
            if retryable(exc):
                other = self.after_failure(backend, triton_name, "http", retry=not retried)
                if other is not None:
                    self._send(other, method, path, body, headers, callback, triton_name, True)
                    return
            callback(self._error(backend, exc))

        backend.pool.start(
            method, path, headers=headers, body=body, timeout_s=self.timeout_s, callback=settle
        )

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

    async def request(
        self,
        method: bytes,
        path: str,
        *,
        body: bytes | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> UpstreamResponse:
        """Send one request to a Triton and wait (routed by the model named in a `/v2/models/` path,
        retried once elsewhere if it fails before any answer); 503 when unreachable, 504 on timeout."""
        triton_name = _model_in(path)
        backend = self.choose(triton_name)
        try:
            return await self._request(backend, method, path, body, headers)
        except (OSError, ConnectionLost) as exc:
            other = self.after_failure(backend, triton_name, "http") if retryable(exc) else None
            if other is None:
                raise self._error(backend, exc) from exc
        try:
            return await self._request(other, method, path, body, headers)
        except (OSError, ConnectionLost) as exc:
            if retryable(exc):
                self.failed(other)
            raise self._error(other, exc) from exc

    async def _request(
        self,
        backend: Backend,
        method: bytes,
        path: str,
        body: bytes | None,
        headers: Sequence[tuple[bytes, bytes]],
    ) -> UpstreamResponse:
        backend.outstanding += 1
        try:
            status, raw_headers, data = await backend.pool.request(
                method, path.encode(), headers=headers, body=body, timeout_s=self.timeout_s
            )
        finally:
            backend.outstanding -= 1
        return UpstreamResponse(status, dict(raw_headers), data)

    def _error(self, backend: Backend, exc: BaseException | None) -> AppError:
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"the inference server did not answer within {self.timeout_s:g}s")
        log.warning("Triton %s at %s is unreachable: %r", backend.name, backend.http_url, exc)
        return TritonUnreachable("the inference server is unavailable right now", retry_after=1)

    def retry_counts(self) -> dict[tuple[str, str], int]:
        """A copy of the retry counters, safe to take from another thread (the scrape's)."""
        for _ in range(5):
            try:
                return dict(self.retries)
            except RuntimeError:  # grew while being copied: try again
                continue
        return {}

    async def close(self) -> None:
        """Close the pools."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


def _model_in(path: str) -> str | None:
    """The Triton model a `/v2/models/<name>/...` path names."""
    if path.startswith("/v2/models/"):
        return path[len("/v2/models/") :].split("/", 1)[0]
    return None


def triton_error(upstream: UpstreamResponse, resolved: Resolved) -> AppError:
    """Triton's error answer in the client's terms: their mistakes 400, not loaded 503, the rest 502."""
    try:
        message = str(orjson.loads(upstream.body).get("error", ""))
    except (orjson.JSONDecodeError, AttributeError):
        message = upstream.body[:500].decode(errors="replace")
    message = hide_internal_name(message, triton_name=resolved.triton_name, model=resolved.model)
    status = upstream.status
    if status == 404:
        return ModelLoading(
            f"model '{resolved.model}' is not loaded on the inference server right now", retry_after=2
        )
    if status in (429, 503):
        return ServiceUnavailable(f"the inference server is busy: {message}", retry_after=1)
    client_mistake = status == 500 and _strip_request_id(message).lower().startswith(_CLIENT_MISTAKES)
    if 400 <= status < 500 or client_mistake:
        return BadRequest(message)
    return BadGateway(f"the inference server failed ({status}): {message}")


def _strip_request_id(message: str) -> str:
    """Triton's message without its `[request id: ...] ` prefix."""
    if message.startswith("[request id:"):
        return message.split("] ", 1)[-1]
    return message
