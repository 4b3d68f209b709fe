"""Pooled keep-alive HTTP connections to the Triton fleet, with our errors at the boundary."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence

import orjson

from control_plane.dataplane.h1client import ConnectionLost, H1Pool, Response
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


class Upstream:
    """Keep-alive connection pools to the Tritons, round-robin over the endpoints."""

    def __init__(self, endpoints: list[TritonEndpoint], *, timeout_s: float):
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self._pools: dict[str, H1Pool] = {}
        self._next = itertools.count()

    def pick(self) -> TritonEndpoint:
        """The next Triton endpoint (round-robin)."""
        if not self.endpoints:
            raise TritonUnreachable("no Triton instance is configured", retry_after=5)
        return self.endpoints[next(self._next) % len(self.endpoints)]

    def _pool(self, endpoint: TritonEndpoint) -> H1Pool:
        pool = self._pools.get(endpoint.http_url)
        if pool is None:
            pool = self._pools[endpoint.http_url] = H1Pool(endpoint.http_url)
        return pool

    def start(
        self,
        method: bytes,
        path: bytes,
        *,
        body: bytes | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
        callback: UpstreamCallback,
    ) -> None:
        """Send one request to a Triton; `callback` gets the response, or 503/504 as an AppError."""
        endpoint = self.pick()

        def settle(response: Response | None, exc: BaseException | None) -> None:
            if response is not None:
                callback(UpstreamResponse(response[0], dict(response[1]), response[2]))
            else:
                callback(self._error(endpoint, exc))

        self._pool(endpoint).start(
            method, path, headers=headers, body=body, timeout_s=self.timeout_s, callback=settle
        )

    async def request(
        self,
        method: bytes,
        path: str,
        *,
        body: bytes | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> UpstreamResponse:
        """Send one request to a Triton and wait; raises 503 when unreachable, 504 on timeout."""
        endpoint = self.pick()
        try:
            status, raw_headers, data = await self._pool(endpoint).request(
                method, path.encode(), headers=headers, body=body, timeout_s=self.timeout_s
            )
        except (OSError, ConnectionLost) as exc:
            raise self._error(endpoint, exc) from exc
        return UpstreamResponse(status, dict(raw_headers), data)

    def _error(self, endpoint: TritonEndpoint, exc: BaseException | None) -> AppError:
        if isinstance(exc, TimeoutError):
            return UpstreamTimeout(f"the inference server did not answer within {self.timeout_s:g}s")
        log.warning("Triton %s at %s is unreachable: %r", endpoint.name, endpoint.http_url, exc)
        return TritonUnreachable("the inference server is unavailable right now", retry_after=1)

    async def close(self) -> None:
        """Close the pools."""
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()


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
