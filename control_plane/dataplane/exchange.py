"""One inference exchange, independent of the server plumbing (ASGI or the fast-path protocol)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from control_plane.dataplane.auth import Caller
from control_plane.dataplane.upstream import UpstreamResponse
from control_plane.errors import AppError, NotFound
from control_plane.routing.router import Resolved

_SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")  # as the management API takes it (middleware)

JSON = b"application/json"


@dataclass(slots=True)
class Reply:
    """A response to send: JSON header part, tensor tail, extra headers, and work for after it is sent."""

    status: int
    content_type: bytes
    head: bytes
    tail: bytes | memoryview = b""
    extra: list[tuple[bytes, bytes]] = field(default_factory=list)
    after: Callable[[], None] | None = None


@dataclass(slots=True)
class Exchange:
    """What the data plane knows about a request as it moves through."""

    headers: dict[bytes, bytes]
    started: float = field(default_factory=time.perf_counter)
    caller: Caller | None = None
    resolved: Resolved | None = None
    status: int | str = 200  # HTTP status, or the gRPC status code's name
    upstream_s: float | None = None
    waited_s: float = 0.0  # waiting for its version to be loaded (residency: on-demand load)
    protocol: str = "http"  # "http" or "grpc": the metrics' label
    reloaded: bool = False  # its version was gone from Triton once and the request waited for it again
    cancel: Callable[[], None] | None = None  # while it waits for its version: what ends the wait

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name."""
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    async def timed(self, request: object) -> UpstreamResponse:
        """Await the upstream call, noting how long it took."""
        began = time.perf_counter()
        try:
            return await request  # type: ignore[misc, no-any-return]
        finally:
            self.upstream_s = time.perf_counter() - began

    def response_headers(self, reply: Reply) -> list[tuple[bytes, bytes]]:
        """Content type and length, Server-Timing (`_server_timing`), the reply's own headers, and the
        client's `X-Request-ID` (`request_id`)."""
        headers = [
            (b"content-type", reply.content_type),
            (b"content-length", str(len(reply.head) + len(reply.tail)).encode()),
            (b"server-timing", self._server_timing(reply)),
            *reply.extra,
        ]
        request_id = self.request_id()
        if request_id is not None:
            headers.append((b"x-request-id", request_id))
        return headers

    def response_header_block(self, reply: Reply) -> bytes:
        """`response_headers` as HTTP/1.1 header lines, for the fast path's single write."""
        block = b"content-type: %s\r\ncontent-length: %d\r\nserver-timing: %s\r\n" % (
            reply.content_type,
            len(reply.head) + len(reply.tail),
            self._server_timing(reply),
        )
        for name, value in reply.extra:
            block += b"%s: %s\r\n" % (name, value)
        request_id = self.request_id()
        if request_id is not None:
            block += b"x-request-id: %s\r\n" % request_id
        return block

    def request_id(self) -> bytes | None:
        """The client's `X-Request-ID`, echoed on the answer when it is safe to (1-64 characters of
        letters, digits and `._:-`, as the management API takes it); the data plane makes none."""
        given = self.headers.get(b"x-request-id")
        return given if given is not None and _SAFE_REQUEST_ID.fullmatch(given) else None

    def _server_timing(self, reply: Reply) -> bytes:
        """The reply's status noted; `server_timing`."""
        self.status = reply.status
        return self.server_timing()

    def server_timing(self) -> bytes:
        """`gateway;dur=` (the control plane's own time), `load;dur=` (only for a request that waited for
        its version to be loaded on demand: the wait) and `triton;dur=`, in milliseconds: the value of
        HTTP's `Server-Timing` header and of gRPC's `server-timing` trailing metadata."""
        total_ms = (time.perf_counter() - self.started) * 1000
        triton_ms = (self.upstream_s or 0.0) * 1000
        if not self.waited_s:
            return b"gateway;dur=%.3f, triton;dur=%.3f" % (total_ms - triton_ms, triton_ms)
        load_ms = self.waited_s * 1000
        return b"gateway;dur=%.3f, load;dur=%.3f, triton;dur=%.3f" % (
            total_ms - load_ms - triton_ms,
            load_ms,
            triton_ms,
        )


def error_reply(exc: AppError, *, v2: bool) -> Reply:
    """The error as JSON: KServe v2's `{"error": message}` (+ kind) on /v2, ours on /v1."""
    document = {"error": exc.message, "kind": exc.kind} if v2 else {"error": exc.kind, "detail": exc.message}
    extra = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after is not None else []
    return Reply(exc.status_code, JSON, orjson.dumps(document), extra=extra)


_VERSION = re.compile(r"[0-9]{1,10}")


def parse_models_path(path: str) -> tuple[str, int | None, str]:
    """`/v2/models/{m}[/versions/{n}][/{action}]` -> (m, n, action); 404 for anything else."""
    parts = path.removeprefix("/v2/models/").rstrip("/").split("/")
    model, rest = parts[0], parts[1:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        if not _VERSION.fullmatch(rest[1]):  # ASCII digits: "²" and Arabic-Indic ones are digits to isdigit
            raise NotFound(f"version '{rest[1]}' of model '{model}' not found")
        version, rest = int(rest[1]), rest[2:]
    if not model or len(rest) > 1:
        raise NotFound(f"no route for {path}")
    return model, version, rest[0] if rest else ""
