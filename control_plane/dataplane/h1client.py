"""A minimal HTTP/1.1 client for the hot path: pooled keep-alive connections, httptools' C parser.

Callback-driven: `H1Pool.start` writes the request on an idle connection and returns; the callback
runs from the connection's `data_received` when the whole response is in. No task, future or timer
per request (deadlines are checked by one sweep per pool while requests are in flight): on a 2-core
machine shared with Triton, every microsecond of proxy CPU is throughput taken from Triton.
`H1Pool.request` is the awaitable form for everything off the hot path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import httptools

log = logging.getLogger(__name__)

Response = tuple[int, list[tuple[bytes, bytes]], bytes]
Callback = Callable[[Response | None, BaseException | None], None]
SWEEP_EVERY_S = 0.05  # how often deadlines are checked: timeouts fire up to this much late


class ConnectionLost(ConnectionError):
    """The connection closed before a whole response arrived; `answered` if some of it had."""

    def __init__(self, message: str, *, answered: bool = False) -> None:
        super().__init__(message)
        self.answered = answered


class PoolClosed(ConnectionLost):
    """The pool was closed (shutting down): nothing to retry."""


class _Call:
    """One request: its bytes, where the answer goes, and until when it may take."""

    __slots__ = ("body", "callback", "connection", "deadline", "done", "request", "retried", "reused")

    def __init__(self, request: bytes, body: bytes | None, callback: Callback, deadline: float):
        self.request, self.body, self.callback, self.deadline = request, body, callback, deadline
        self.connection: _Connection | None = None
        self.reused = self.retried = self.done = False

    def finish(self, response: Response | None, exc: BaseException | None) -> None:
        """Hand the outcome to the callback, once."""
        if self.done:
            return
        self.done = True
        try:
            self.callback(response, exc)
        except Exception:  # a callback's own failure must not break the connection it ran on
            log.exception("upstream callback failed")

    def abandon(self) -> None:
        """The caller stopped waiting (cancelled): drop the connection, whose state is now unknown."""
        if self.done:  # answered already: its connection may be serving another call by now
            return
        self.done = True
        if self.connection is not None and self.connection.call is self:
            self.connection.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self, pool: H1Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.call: _Call | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.answered = False  # some response bytes arrived for the current call
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._lost(ConnectionLost(f"bad response from upstream: {exc}", answered=True))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost(ConnectionLost("upstream closed the connection", answered=self.answered))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        call, self.call = self.call, None
        if call is None:
            return
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        response = (self.parser.get_status_code(), self.headers, data)
        self.pool._done(self, keep_alive=self.parser.should_keep_alive())
        call.finish(response, None)

    # used by the pool
    def send(self, call: _Call) -> None:
        """Write the call's request; the answer comes to the pool."""
        assert self.transport is not None
        self.call, call.connection = call, self
        self.headers, self.chunks, self.answered = [], [], False
        body = call.body
        if body and len(body) > 64 * 1024:
            self.transport.writelines((call.request, body))
        else:  # one write, one syscall
            self.transport.write(call.request + body if body else call.request)

    def _lost(self, exc: BaseException) -> None:
        call, self.call = self.call, None
        self.close()
        if call is not None:
            self.pool._lost(self, call, exc)

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
        self._busy: set[_Connection] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        self._sweep: asyncio.TimerHandle | None = None  # deadline checks, while requests are in flight
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(
        self,
        method: bytes,
        path: bytes,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        timeout_s: float,
        callback: Callback,
    ) -> _Call:
        """Send a request; `callback(response, None)` or `callback(None, exc)` runs exactly once.

        exc is a TimeoutError past `timeout_s`, else an OSError or ConnectionLost. A reused idle
        connection that turns out closed is retried once on a fresh one.
        """
        request = b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, self.host_header)
        for name, value in headers:
            request += b"%s: %s\r\n" % (name, value)
        request += b"Content-Length: %d\r\n\r\n" % (len(body) if body else 0)
        # The loop of the pool's connections: get_running_loop() costs a getpid() syscall.
        loop = self._loop or asyncio.get_running_loop()
        call = _Call(request, body, callback, loop.time() + timeout_s)
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.closed:
                call.reused = True
                self._send(connection, call)
                return call
        self._loop = asyncio.get_running_loop()  # new connections belong to the loop running now
        self._connect(call, self._loop)
        return call

    async def request(
        self,
        method: bytes,
        path: bytes,
        *,
        headers: Sequence[tuple[bytes, bytes]] = (),
        body: bytes | None = None,
        timeout_s: float,
    ) -> Response:
        """`start` as an awaitable: (status, lower-cased headers, body); raises what `start` reports."""
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()

        def settle(response: Response | None, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                assert response is not None
                future.set_result(response)

        call = self.start(method, path, headers=headers, body=body, timeout_s=timeout_s, callback=settle)
        try:
            return await future
        except asyncio.CancelledError:
            call.abandon()
            raise

    def close(self) -> None:
        """Close every connection; requests in flight fail with ConnectionLost."""
        self._closed = True
        for task in list(self._connecting):
            task.cancel()
        while self._idle:
            self._idle.pop().close()
        for connection in list(self._busy):
            connection.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    # internals
    def _send(self, connection: _Connection, call: _Call) -> None:
        self._busy.add(connection)
        if self._sweep is None:
            loop = self._loop = self._loop or asyncio.get_running_loop()
            self._sweep = loop.call_later(SWEEP_EVERY_S, self._check_deadlines)
        connection.send(call)

    def _connect(self, call: _Call, loop: asyncio.AbstractEventLoop) -> None:
        if self._closed:
            call.finish(None, PoolClosed("the pool was closed"))
            return
        task = loop.create_task(self._open(call))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _open(self, call: _Call) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(call.deadline):
                _, connection = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except asyncio.CancelledError:
            call.finish(None, PoolClosed("the pool was closed"))
            raise
        except (OSError, TimeoutError) as exc:
            call.finish(None, exc)
            return
        if call.done:  # abandoned while connecting
            connection.close()
            return
        self._loop = loop
        self._send(connection, call)

    def _done(self, connection: _Connection, *, keep_alive: bool) -> None:
        self._busy.discard(connection)
        if self._closed or connection.closed or not keep_alive or len(self._idle) >= self.max_idle:
            connection.close()
        else:
            self._idle.append(connection)

    def _lost(self, connection: _Connection, call: _Call, exc: BaseException) -> None:
        self._busy.discard(connection)
        if call.done:
            return
        stale = call.reused and not connection.answered and isinstance(exc, ConnectionLost)
        if stale and not call.retried and not self._closed:
            call.retried = True  # a stale idle socket: retry once on a new one
            call.connection = None
            self._connect(call, asyncio.get_running_loop())
            return
        call.finish(None, exc)

    def _check_deadlines(self) -> None:
        self._sweep = None
        now = asyncio.get_running_loop().time()
        for connection in list(self._busy):
            call = connection.call
            if call is not None and call.deadline <= now:
                connection.call = None
                self._busy.discard(connection)
                connection.close()
                call.finish(None, TimeoutError())
        if self._busy:
            self._sweep = asyncio.get_running_loop().call_later(SWEEP_EVERY_S, self._check_deadlines)
