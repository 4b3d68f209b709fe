"""One data-plane HTTP exchange: headers, body with a size limit, timed upstream call, response."""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import orjson
from starlette.types import Receive, Scope, Send

from control_plane.dataplane.auth import Caller
from control_plane.dataplane.upstream import UpstreamResponse
from control_plane.errors import AppError, NotFound, PayloadTooLarge
from control_plane.routing.router import Resolved

FORWARDED = (b"content-type", b"inference-header-content-length", b"content-encoding")


@dataclass(slots=True)
class Call:
    """State of one request as it moves through the data plane."""

    scope: Scope
    receive: Receive
    send: Send
    started: float
    caller: Caller | None = None
    resolved: Resolved | None = None
    status: int = 200
    responded: bool = False
    upstream_s: float | None = None
    _headers: dict[bytes, bytes] = field(default_factory=dict)

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name."""
        if not self._headers:
            self._headers = dict(self.scope["headers"])
        value = self._headers.get(name)
        return value.decode("latin-1") if value is not None else None

    def forward_headers(self) -> list[tuple[bytes, bytes]]:
        """The request headers Triton needs to read an infer body."""
        if not self._headers:
            self._headers = dict(self.scope["headers"])
        return [(name, value) for name in FORWARDED if (value := self._headers.get(name)) is not None]

    async def timed_upstream(self, request: Awaitable[UpstreamResponse]) -> UpstreamResponse:
        """Await the upstream call, noting how long it took."""
        began = time.perf_counter()
        try:
            return await request
        finally:
            self.upstream_s = time.perf_counter() - began

    async def respond(
        self,
        status: int,
        content_type: bytes,
        head: bytes,
        tail: bytes | memoryview = b"",
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Send the response with a Server-Timing header splitting gateway and Triton time."""
        self.status, self.responded = status, True
        total_ms = (time.perf_counter() - self.started) * 1000
        triton_ms = (self.upstream_s or 0.0) * 1000
        timing = f"gateway;dur={total_ms - triton_ms:.3f}, triton;dur={triton_ms:.3f}".encode()
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(head) + len(tail)).encode()),
            (b"server-timing", timing),
            *(extra or ()),
        ]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        if tail:
            await self.send({"type": "http.response.body", "body": head, "more_body": True})
            await self.send({"type": "http.response.body", "body": tail})
        else:
            await self.send({"type": "http.response.body", "body": head})

    async def send_error(self, exc: AppError, *, v2: bool) -> None:
        """The error as JSON: KServe v2's `{"error": message}` (+ kind) on /v2, ours on /v1."""
        document = (
            {"error": exc.message, "kind": exc.kind} if v2 else {"error": exc.kind, "detail": exc.message}
        )
        extra = [(b"retry-after", str(exc.retry_after).encode())] if exc.retry_after is not None else []
        await self.respond(exc.status_code, b"application/json", orjson.dumps(document), extra=extra)


def parse_models_path(path: str) -> tuple[str, int | None, str]:
    """`/v2/models/{m}[/versions/{n}][/{action}]` -> (m, n, action); 404 for anything else."""
    parts = path.removeprefix("/v2/models/").rstrip("/").split("/")
    model, rest = parts[0], parts[1:]
    version = None
    if len(rest) >= 2 and rest[0] == "versions":
        if not rest[1].isdigit():
            raise NotFound(f"version '{rest[1]}' of model '{model}' not found")
        version, rest = int(rest[1]), rest[2:]
    if not model or len(rest) > 1:
        raise NotFound(f"no route for {path}")
    return model, version, rest[0] if rest else ""


async def read_body(call: Call, *, limit: int) -> bytes:
    """The whole request body; 413 past `limit` bytes (checked on Content-Length first)."""
    declared = call.header(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await call.receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_response(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    """A plain response (no timing header)."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
