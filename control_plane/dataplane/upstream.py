"""Pooled keep-alive HTTP connections to the Triton fleet, with our errors at the boundary."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import orjson

from control_plane.dataplane.balance import Backend, Balancer, TritonUnreachable, retryable
from control_plane.dataplane.h1client import ConnectionLost, H1Pool, Response
from control_plane.dataplane.rewrite import hide_internal_name
from control_plane.errors import AppError, BadRequest, ServiceUnavailable, UpstreamTimeout
from control_plane.fleet.instances import TritonEndpoint
from control_plane.routing.router import ModelLoading, Resolved

log = logging.getLogger(__name__)
__all__ = [
    "Backend",
    "BadGateway",
    "TritonUnreachable",
    "Upstream",
    "UpstreamCallback",
    "UpstreamResponse",
    "triton_error",
]


class BadGateway(AppError):
    """Triton answered something we cannot read, or failed in a way that is not the client's doing."""

    status_code = 502
    kind = "BadGateway"


# Triton answers 500 to requests its JSON parser refuses; those are the client's mistakes.
# Triton's 500s that are the request's fault: "Unable to set 'classification': ..." answers a bad output
# parameter (a negative or non-integer class count, over HTTP; gRPC says INVALID_ARGUMENT itself).
_CLIENT_MISTAKES = (
    "unable to parse",
    "failed to parse",
    "unexpected inference",
    "inference input",
    "unable to set",
)


class UpstreamResponse:
    """Triton's answer, body read whole; header names lower-case."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[bytes, bytes], body: bytes):
        self.status, self.headers, self.body = status, headers, body


UpstreamCallback = Callable[[UpstreamResponse | AppError], None]


class Upstream(Balancer):
    """Keep-alive pools to the Tritons; each request goes where `Balancer` says, retried once elsewhere
    when it failed before any byte of an answer."""

    def __init__(
        self,
        endpoints: list[TritonEndpoint],
        *,
        timeout_s: float,
        on_down: Callable[[str], None] | None = None,
    ):
        self.timeout_s = timeout_s
        self._pools: dict[str, H1Pool] = {}
        super().__init__(on_down=on_down)
        self.endpoints = endpoints

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
