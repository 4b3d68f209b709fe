"""The ASGI side of one data-plane request: body with a size limit, and sending a Reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from control_plane.dataplane.exchange import Exchange, Reply
from control_plane.errors import AppError, PayloadTooLarge

COPY_LIMIT = 64 * 1024


class ClientDisconnected(AppError):
    """Nobody is left to answer (recorded as 499, as nginx does)."""

    status_code = 499
    kind = "ClientDisconnected"


@dataclass(slots=True)
class Call:
    """An ASGI request/response pair around an Exchange."""

    scope: Scope
    receive: Receive
    send: Send
    ex: Exchange
    responded: bool = False

    async def respond(self, reply: Reply) -> None:
        """Send the reply; small bodies in one write, big tensor tails without a copy."""
        self.responded = True
        headers = self.ex.response_headers(reply)
        await self.send({"type": "http.response.start", "status": reply.status, "headers": headers})
        if len(reply.tail) > COPY_LIMIT:
            await self.send({"type": "http.response.body", "body": reply.head, "more_body": True})
            await self.send({"type": "http.response.body", "body": reply.tail})
        else:
            body = reply.head + reply.tail if reply.tail else reply.head
            await self.send({"type": "http.response.body", "body": body})


async def read_body(call: Call, *, limit: int) -> bytes:
    """The whole request body; 413 past `limit` bytes (checked on Content-Length first)."""
    declared = call.ex.header(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await call.receive()
        if message["type"] == "http.disconnect":  # a truncated body is never forwarded
            raise ClientDisconnected("the client went away before sending the whole body")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@asynccontextmanager
async def watching_for_hangup(call: Call) -> AsyncIterator[None]:
    """Once the body is in, the next ASGI message is the disconnect (uvicorn sends it when the connection
    is lost): while the request is served, a hang-up ends a wait for its version's load (`ex.cancel`),
    as the fast path's `connection_lost` and gRPC's reset do. A pipelined request is not told: uvicorn
    tells only the connection's newest request."""

    async def watch() -> None:
        while (await call.receive())["type"] == "http.request":
            pass  # a GET's empty body, which its handler does not read
        if call.ex.cancel is not None:  # http.disconnect
            call.ex.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        yield
    finally:
        watcher.cancel()


async def send_response(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    """A plain response (no timing header)."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
