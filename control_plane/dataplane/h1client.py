"""A minimal HTTP/1.1 client for the hot path: pooled keep-alive connections, httptools' C parser.

aiohttp costs several times more CPU per request; on a 2-core machine shared with Triton that CPU
is throughput taken from Triton. This client does only what proxying to Triton needs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from urllib.parse import urlsplit

import httptools

Response = tuple[int, list[tuple[bytes, bytes]], bytes]


class ConnectionLost(ConnectionError):
    """The connection closed before a whole response arrived."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[None] | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.closed = False
        self.keep_alive = True

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"bad response from upstream: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionLost("upstream closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    async def exchange(
        self, request: bytes, body: bytes | None
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request and wait for the whole response."""
        assert self.transport is not None
        self.headers, self.chunks = [], []
        self.waiter = asyncio.get_running_loop().create_future()
        if body and len(body) > 64 * 1024:
            self.transport.writelines((request, body))
        else:  # one write, one syscall
            self.transport.write(request + body if body else request)
        await self.waiter
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return self.parser.get_status_code(), self.headers, data

    def close(self) -> None:
        """Close the socket."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class H1Pool:
    """Keep-alive connections to one `http://host:port`."""

    def __init__(self, base_url: str, *, max_idle: int = 256):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only plain http:// upstreams are supported, got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.host_header = parts.netloc.encode()
        self.max_idle = max_idle
        self._idle: deque[_Connection] = deque()

    async def request(
        self,
        method: bytes,
        path: bytes,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
    ) -> Response:
        """(status, lower-cased headers, body); raises OSError/ConnectionLost when the upstream fails."""
        lines = [method, b" ", path, b" HTTP/1.1\r\nHost: ", self.host_header, b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        lines += (b"Content-Length: ", str(len(body) if body else 0).encode(), b"\r\n\r\n")
        request = b"".join(lines)
        connection, reused = await self._acquire()
        try:
            result = await connection.exchange(request, body)
        except ConnectionLost:
            connection.close()
            if not reused:
                raise
            connection, _ = await self._acquire(fresh=True)  # a stale idle socket: retry once on a new one
            try:
                result = await connection.exchange(request, body)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()  # cancelled or timed out mid-exchange: the socket's state is unknown
            raise
        self._release(connection)
        return result

    async def _acquire(self, *, fresh: bool = False) -> tuple[_Connection, bool]:
        while self._idle and not fresh:
            connection = self._idle.pop()
            if not connection.closed:
                return connection, True
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(_Connection, self.host, self.port)
        return connection, False

    def _release(self, connection: _Connection) -> None:
        if connection.closed or not connection.keep_alive or len(self._idle) >= self.max_idle:
            connection.close()
        else:
            self._idle.append(connection)

    def close(self) -> None:
        """Close every idle connection."""
        while self._idle:
            self._idle.pop().close()
