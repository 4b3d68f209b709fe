"""H1Pool (and Upstream's error mapping) against a scripted HTTP/1.1 server on a real local socket.

The fake server parses requests itself (Content-Length bodies only), counts the connections it
accepts, the requests it reads and the connections the client closed, and answers each request with
a per-test handler: write a response and keep the connection, stall, close, send garbage...
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import pytest

from control_plane.dataplane.h1client import SWEEP_EVERY_S, ConnectionLost, H1Pool, Response
from control_plane.dataplane.upstream import TritonUnreachable, Upstream, UpstreamResponse
from control_plane.errors import AppError, UpstreamTimeout
from control_plane.fleet.instances import TritonEndpoint

SCENARIO_TIMEOUT_S = 5.0  # nothing here may hang: every scenario runs under this limit


@dataclass
class Received:
    """One request as the fake server read it."""

    connection: int  # index of the connection it came on, in accept order
    method: str
    path: str
    headers: list[tuple[str, str]]  # names lower-cased, in order
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


# A handler answers one request: it writes whatever it likes and returns whether to keep reading
# requests on the connection (False: the server closes it at once).
Handler = Callable[[Received, asyncio.StreamWriter], Awaitable[bool]]


def http_response(
    status: int = 200,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    *,
    reason: str = "OK",
    content_length: bool = True,
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def echo(request: Received, writer: asyncio.StreamWriter) -> bool:
    """200, a mixed-case header, and a body naming the request."""
    body = f"{request.method} {request.path} conn={request.connection} len={len(request.body)}".encode()
    writer.write(http_response(200, body, [("X-Echo-Path", request.path)]))
    return True


async def stall(request: Received, writer: asyncio.StreamWriter) -> bool:
    """Never answer; keep reading (so the server notices when the client closes)."""
    return True


def by_path(routes: dict[str, Handler], default: Handler = echo) -> Handler:
    async def handle(request: Received, writer: asyncio.StreamWriter) -> bool:
        return await routes.get(request.path, default)(request, writer)

    return handle


class FakeServer:
    """A tiny HTTP/1.1 server on 127.0.0.1, port 0, driven by a handler."""

    def __init__(self, handler: Handler = echo) -> None:
        self.handler = handler
        self.accepted = 0
        self.requests: list[Received] = []
        self.client_closed = 0  # connections on which the server read EOF (or a reset) from the client
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    request = await self._read(reader, index)
                except (asyncio.IncompleteReadError, ConnectionError):
                    request = None
                if request is None:
                    self.client_closed += 1
                    return
                self.requests.append(request)
                if not await self.handler(request, writer):
                    return
                await writer.drain()
        except ConnectionError:
            self.client_closed += 1
        except asyncio.CancelledError:
            pass  # stop(): end quietly (asyncio logs a callback error for a cancelled handler task)
        finally:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)

    @staticmethod
    async def _read(reader: asyncio.StreamReader, index: int) -> Received | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise
        request_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        method, path, version = request_line.split(" ")
        assert version == "HTTP/1.1", request_line
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        lengths = [int(value) for name, value in headers if name == "content-length"]
        body = await reader.readexactly(lengths[0]) if lengths else b""
        return Received(index, method, path, headers, body)


async def until(condition: Callable[[], bool], *, timeout_s: float = 2.0) -> None:
    """Wait until `condition()` holds (polling), or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout=SCENARIO_TIMEOUT_S))


def with_pool(
    handler: Handler = echo, **pool_options: Any
) -> Callable[[Callable[[FakeServer, H1Pool], Awaitable[None]]], Callable[[], None]]:
    """Decorator: run the test body with a started fake server and a pool on it; both closed after."""

    def decorate(body: Callable[[FakeServer, H1Pool], Awaitable[None]]) -> Callable[[], None]:
        async def scenario() -> None:
            server = await FakeServer(handler).start()
            pool = H1Pool(server.url, **pool_options)
            try:
                await body(server, pool)
            finally:
                pool.close()
                await server.stop()

        def test() -> None:
            run(scenario())

        test.__name__ = body.__name__
        test.__doc__ = body.__doc__
        return test

    return decorate


class Outcomes:
    """A `start` callback that records every call it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[Response | None, BaseException | None]] = []
        self.event = asyncio.Event()

    def __call__(self, response: Response | None, exc: BaseException | None) -> None:
        self.calls.append((response, exc))
        self.event.set()

    async def wait(self) -> tuple[Response | None, BaseException | None]:
        await asyncio.wait_for(self.event.wait(), 2)
        await asyncio.sleep(0.05)  # room for a wrong second call
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


def free_port() -> int:
    """A port on which nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- construction ----------------------------------------------------------------------------------


def test_only_plain_http_urls_with_a_host_are_accepted() -> None:
    with pytest.raises(ValueError, match="only plain http://"):
        H1Pool("https://127.0.0.1:8000")
    with pytest.raises(ValueError, match="only plain http://"):
        H1Pool("http://")
    pool = H1Pool("http://triton.local")
    assert (pool.host, pool.port, pool.host_header) == ("triton.local", 80, b"triton.local")
    pool = H1Pool("http://127.0.0.1:8123/ignored")
    assert (pool.host, pool.port, pool.host_header) == ("127.0.0.1", 8123, b"127.0.0.1:8123")


# --- keep-alive and the request on the wire --------------------------------------------------------


@with_pool()
async def test_sequential_requests_reuse_one_connection(server: FakeServer, pool: H1Pool) -> None:
    for i in range(20):
        status, headers, body = await pool.request(b"GET", f"/r/{i}".encode(), timeout_s=2)
        assert status == 200
        assert body == f"GET /r/{i} conn=0 len=0".encode()
        assert (b"x-echo-path", f"/r/{i}".encode()) in headers
        assert all(name == name.lower() for name, _ in headers)
    assert server.accepted == 1
    assert len(server.requests) == 20
    assert {r.connection for r in server.requests} == {0}
    assert server.client_closed == 0


@with_pool()
async def test_request_line_host_content_length_and_extra_headers(server: FakeServer, pool: H1Pool) -> None:
    await pool.request(
        b"GET", b"/v2/health/ready?x=1", headers=[(b"X-Trace", b"abc"), (b"Accept", b"*/*")], timeout_s=2
    )
    [request] = server.requests
    assert (request.method, request.path) == ("GET", "/v2/health/ready?x=1")
    assert request.header("host") == [f"127.0.0.1:{server.port}"]
    assert request.header("content-length") == ["0"]  # always sent, even without a body
    assert request.header("x-trace") == ["abc"]
    assert request.header("accept") == ["*/*"]
    assert request.body == b""


@pytest.mark.parametrize(
    "size",
    [1, 64 * 1024, 64 * 1024 + 1, 1024 * 1024 + 7],
    ids=["tiny", "64KiB-one-write", "over-64KiB-writelines", "1MiB"],
)
def test_post_bodies_arrive_intact(size: int) -> None:
    payload = os.urandom(size)

    @with_pool()
    async def scenario(server: FakeServer, pool: H1Pool) -> None:
        for _ in range(2):  # and the connection stays usable after a big body
            status, _, body = await pool.request(
                b"POST",
                b"/v2/models/m/infer",
                headers=[(b"Content-Type", b"application/octet-stream")],
                body=payload,
                timeout_s=5,
            )
            assert status == 200
            assert body.endswith(f"len={size}".encode())
        assert server.accepted == 1
        assert len(server.requests) == 2
        for request in server.requests:
            assert request.method == "POST"
            assert request.body == payload
            assert request.header("content-length") == [str(size)]
            assert request.header("host") == [f"127.0.0.1:{server.port}"]
            assert request.header("content-type") == ["application/octet-stream"]

    scenario()


async def _headers_differ(request: Received, writer: asyncio.StreamWriter) -> bool:
    name = "X-First" if request.path == "/1" else "X-Second"
    writer.write(http_response(201, b"", [(name, "Mixed-Case-Value")], reason="Created"))
    return True


@with_pool(_headers_differ)
async def test_each_response_has_only_its_own_headers_and_status(server: FakeServer, pool: H1Pool) -> None:
    status, headers, body = await pool.request(b"GET", b"/1", timeout_s=2)
    assert (status, body) == (201, b"")
    assert headers == [(b"x-first", b"Mixed-Case-Value"), (b"content-length", b"0")]
    status, headers, body = await pool.request(b"GET", b"/2", timeout_s=2)
    assert headers == [(b"x-second", b"Mixed-Case-Value"), (b"content-length", b"0")]
    assert server.accepted == 1


async def _error_status(request: Received, writer: asyncio.StreamWriter) -> bool:
    writer.write(http_response(500, b'{"error":"boom"}', reason="Internal Server Error"))
    return True


@with_pool(_error_status)
async def test_error_statuses_are_responses_not_exceptions(server: FakeServer, pool: H1Pool) -> None:
    for _ in range(2):
        status, _, body = await pool.request(b"GET", b"/", timeout_s=2)
        assert (status, body) == (500, b'{"error":"boom"}')
    assert server.accepted == 1


async def _chunked_and_trickled(request: Received, writer: asyncio.StreamWriter) -> bool:
    """A chunked body, written in small pieces with pauses (many data_received calls)."""
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
        b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    for i in range(0, len(raw), 7):
        writer.write(raw[i : i + 7])
        await writer.drain()
        await asyncio.sleep(0.001)
    return True


@with_pool(_chunked_and_trickled)
async def test_chunked_responses_in_many_pieces_are_reassembled(server: FakeServer, pool: H1Pool) -> None:
    for _ in range(2):
        status, headers, body = await pool.request(b"GET", b"/", timeout_s=2)
        assert (status, body) == (200, b"hello world")
        assert (b"transfer-encoding", b"chunked") in headers
    assert server.accepted == 1


BIG = os.urandom(3 * 1024 * 1024 + 5)


async def _big_answer(request: Received, writer: asyncio.StreamWriter) -> bool:
    writer.write(http_response(200, BIG))
    return True


@with_pool(_big_answer)
async def test_a_large_response_body_is_joined_whole(server: FakeServer, pool: H1Pool) -> None:
    for _ in range(2):
        status, _, body = await pool.request(b"GET", b"/", timeout_s=5)
        assert status == 200
        assert body == BIG
    assert server.accepted == 1


async def _no_content(request: Received, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    return True


@with_pool(_no_content)
async def test_no_content_responses_complete_and_keep_the_connection(
    server: FakeServer, pool: H1Pool
) -> None:
    for _ in range(3):
        assert await pool.request(b"DELETE", b"/x", timeout_s=2) == (204, [], b"")
    assert server.accepted == 1


# --- concurrency and the idle list -----------------------------------------------------------------


async def _slow_echo(request: Received, writer: asyncio.StreamWriter) -> bool:
    await asyncio.sleep(0.02)
    return await echo(request, writer)


@with_pool(_slow_echo)
async def test_concurrent_requests_open_connections_that_are_then_reused(
    server: FakeServer, pool: H1Pool
) -> None:
    async def batch(tag: str) -> None:
        answers = await asyncio.gather(
            *(pool.request(b"GET", f"/{tag}/{i}".encode(), timeout_s=2) for i in range(10))
        )
        for i, (status, headers, _) in enumerate(answers):
            assert status == 200
            assert (b"x-echo-path", f"/{tag}/{i}".encode()) in headers  # each caller got its own answer

    await batch("a")
    assert 1 < server.accepted <= 10
    opened = server.accepted
    assert len(pool._idle) == opened and not pool._busy
    await batch("b")
    await batch("c")
    assert server.accepted == opened  # no new connections: the idle ones served both batches
    assert len(server.requests) == 30
    assert server.client_closed == 0


@with_pool(_slow_echo, max_idle=2)
async def test_at_most_max_idle_connections_are_kept(server: FakeServer, pool: H1Pool) -> None:
    await asyncio.gather(*(pool.request(b"GET", b"/", timeout_s=2) for _ in range(5)))
    assert server.accepted == 5
    assert len(pool._idle) == 2
    await until(lambda: server.client_closed == 3)  # the other three were closed
    await asyncio.gather(*(pool.request(b"GET", b"/", timeout_s=2) for _ in range(2)))
    assert server.accepted == 5


# --- connections that close --------------------------------------------------------------------------


async def _answer_then_close(request: Received, writer: asyncio.StreamWriter) -> bool:
    writer.write(http_response(200, f"conn={request.connection}".encode()))
    await writer.drain()
    return False  # closes the socket, without saying `Connection: close`


@with_pool(_answer_then_close)
async def test_a_stale_idle_connection_is_retried_once_on_a_fresh_one(
    server: FakeServer, pool: H1Pool
) -> None:
    """The second request goes out on the idle connection before the client has seen the server's
    FIN (it is sent from the first one's callback), finds it closed, and is retried."""
    second = Outcomes()
    calls = []

    def first(response: Response | None, exc: BaseException | None) -> None:
        assert exc is None and response is not None and response[2] == b"conn=0"
        calls.append(pool.start(b"GET", b"/second", timeout_s=2, callback=second))

    pool.start(b"GET", b"/first", timeout_s=2, callback=first)
    response, exc = await second.wait()
    assert exc is None
    assert response is not None and response[0] == 200 and response[2] == b"conn=1"
    assert calls[0].reused and calls[0].retried
    assert server.accepted == 2
    assert [(r.connection, r.path) for r in server.requests] == [(0, "/first"), (1, "/second")]


@with_pool(_answer_then_close)
async def test_an_idle_connection_known_closed_is_skipped(server: FakeServer, pool: H1Pool) -> None:
    for i in range(3):
        status, _, body = await pool.request(b"GET", b"/", timeout_s=2)
        assert (status, body) == (200, f"conn={i}".encode())
        await until(lambda: not pool._idle or pool._idle[0].closed)  # the client saw the close
    assert server.accepted == 3


async def _first_answers_then_everything_closes(request: Received, writer: asyncio.StreamWriter) -> bool:
    if request.path == "/first":
        writer.write(http_response(200, b"ok"))
        await writer.drain()
    return False  # close; later requests get no answer at all


@with_pool(_first_answers_then_everything_closes)
async def test_the_stale_connection_retry_happens_only_once(server: FakeServer, pool: H1Pool) -> None:
    second = Outcomes()

    def first(response: Response | None, exc: BaseException | None) -> None:
        pool.start(b"GET", b"/second", timeout_s=2, callback=second)

    pool.start(b"GET", b"/first", timeout_s=2, callback=first)
    response, exc = await second.wait()
    assert response is None and isinstance(exc, ConnectionLost)
    await asyncio.sleep(0.05)
    assert server.accepted == 2  # the original connection and one retry, no more


async def _close_without_answer(request: Received, writer: asyncio.StreamWriter) -> bool:
    return False


@with_pool(_close_without_answer)
async def test_a_fresh_connection_closed_before_answering_is_not_retried(
    server: FakeServer, pool: H1Pool
) -> None:
    with pytest.raises(ConnectionLost, match="closed the connection"):
        await pool.request(b"POST", b"/infer", body=b"x", timeout_s=2)
    await asyncio.sleep(0.05)
    assert server.accepted == 1
    assert len(server.requests) == 1


async def _half_answer_on_second(request: Received, writer: asyncio.StreamWriter) -> bool:
    if request.path == "/first":
        return await echo(request, writer)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of the bo")
    await writer.drain()
    return False


@with_pool(_half_answer_on_second)
async def test_a_partial_response_then_close_is_not_retried(server: FakeServer, pool: H1Pool) -> None:
    await pool.request(b"GET", b"/first", timeout_s=2)
    # the second request reuses the idle connection, so only the "some answer arrived" rule stops a retry
    with pytest.raises(ConnectionLost):
        await pool.request(b"POST", b"/second", body=b"payload", timeout_s=2)
    await asyncio.sleep(0.05)
    assert server.accepted == 1
    assert [r.path for r in server.requests] == ["/first", "/second"]
    assert await pool.request(b"GET", b"/first", timeout_s=2)  # the pool recovers on a new connection
    assert server.accepted == 2


async def _connection_close(request: Received, writer: asyncio.StreamWriter) -> bool:
    writer.write(http_response(200, f"conn={request.connection}".encode(), [("Connection", "close")]))
    return True  # keep the socket open and reading: the client must close it (the server sees EOF)


@with_pool(_connection_close)
async def test_connection_close_responses_are_delivered_and_not_pooled(
    server: FakeServer, pool: H1Pool
) -> None:
    for i in range(3):
        status, headers, body = await pool.request(b"GET", b"/", timeout_s=2)
        assert (status, body) == (200, f"conn={i}".encode())
        assert (b"connection", b"close") in headers
        assert not pool._idle
    assert server.accepted == 3
    await until(lambda: server.client_closed == 3)  # the client closed each one itself


async def _http10(request: Received, writer: asyncio.StreamWriter) -> bool:
    writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return True  # the client must close


@with_pool(_http10)
async def test_an_http10_response_without_keep_alive_is_not_pooled(server: FakeServer, pool: H1Pool) -> None:
    assert await pool.request(b"GET", b"/", timeout_s=2) == (200, [(b"content-length", b"2")], b"ok")
    assert not pool._idle
    await until(lambda: server.client_closed == 1)


# --- timeouts ----------------------------------------------------------------------------------------


@with_pool(by_path({"/stall": stall}))
async def test_a_request_without_answer_times_out_and_its_connection_is_closed(
    server: FakeServer, pool: H1Pool
) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        await pool.request(b"GET", b"/stall", timeout_s=0.2)
    took = loop.time() - began
    assert 0.2 <= took < 0.2 + SWEEP_EVERY_S + 0.15, took
    await until(lambda: server.client_closed == 1)  # the server sees the close
    assert not pool._idle and not pool._busy
    status, _, body = await pool.request(b"GET", b"/after", timeout_s=2)
    assert (status, body) == (200, b"GET /after conn=1 len=0")
    assert server.accepted == 2


@with_pool(by_path({"/stall": stall}))
async def test_a_timeout_on_a_reused_connection_via_start(server: FakeServer, pool: H1Pool) -> None:
    await pool.request(b"GET", b"/warm", timeout_s=2)
    outcomes = Outcomes()
    pool.start(b"GET", b"/stall", timeout_s=0.1, callback=outcomes)
    response, exc = await outcomes.wait()
    assert response is None and isinstance(exc, TimeoutError)
    await until(lambda: server.client_closed == 1)
    assert server.accepted == 1  # a timeout is not retried


async def _slow(request: Received, writer: asyncio.StreamWriter) -> bool:
    await asyncio.sleep(0.3)
    return await echo(request, writer)


@with_pool(by_path({"/stall": stall, "/slow": _slow}))
async def test_the_deadline_sweep_only_fails_overdue_requests(server: FakeServer, pool: H1Pool) -> None:
    stalled = asyncio.ensure_future(pool.request(b"GET", b"/stall", timeout_s=0.1))
    slow = asyncio.ensure_future(pool.request(b"GET", b"/slow", timeout_s=2))
    with pytest.raises(TimeoutError):
        await stalled
    assert not slow.done()
    status, _, body = await slow  # the sweep keeps running while it waits, and leaves it alone
    assert (status, body) == (200, b"GET /slow conn=1 len=0")
    assert server.accepted == 2


def test_a_late_answer_after_a_timeout_is_ignored() -> None:
    async def late(request: Received, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.25)
        return await echo(request, writer)

    @with_pool(late)
    async def scenario(server: FakeServer, pool: H1Pool) -> None:
        outcomes = Outcomes()
        pool.start(b"GET", b"/", timeout_s=0.1, callback=outcomes)
        await asyncio.wait_for(outcomes.event.wait(), 2)
        await asyncio.sleep(0.3)  # the answer would have come by now
        assert len(outcomes.calls) == 1
        assert isinstance(outcomes.calls[0][1], TimeoutError)

    scenario()


# --- connect failures ----------------------------------------------------------------------------------


def test_connection_refused_via_request_and_via_start() -> None:
    async def scenario() -> None:
        pool = H1Pool(f"http://127.0.0.1:{free_port()}")
        try:
            with pytest.raises(ConnectionRefusedError):
                await pool.request(b"GET", b"/", timeout_s=2)
            outcomes = Outcomes()
            pool.start(b"GET", b"/", timeout_s=2, callback=outcomes)
            response, exc = await outcomes.wait()
            assert response is None and isinstance(exc, OSError)
            assert not isinstance(exc, TimeoutError)
        finally:
            pool.close()

    run(scenario())


# --- callbacks -----------------------------------------------------------------------------------------


@with_pool()
async def test_start_calls_back_once_with_the_response(server: FakeServer, pool: H1Pool) -> None:
    outcomes = Outcomes()
    call = pool.start(b"POST", b"/cb", body=b"abc", timeout_s=2, callback=outcomes)
    assert not outcomes.calls  # nothing happens synchronously
    response, exc = await outcomes.wait()
    assert exc is None
    assert response is not None
    assert response[0] == 200 and response[2] == b"POST /cb conn=0 len=3"
    assert call.done


def test_a_callback_that_raises_is_logged_and_the_pool_keeps_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @with_pool()
    async def scenario(server: FakeServer, pool: H1Pool) -> None:
        ran = asyncio.Event()

        def explode(response: Response | None, exc: BaseException | None) -> None:
            ran.set()
            raise RuntimeError("callback bug")

        with caplog.at_level(logging.ERROR, logger="control_plane.dataplane.h1client"):
            pool.start(b"GET", b"/one", timeout_s=2, callback=explode)
            await asyncio.wait_for(ran.wait(), 2)
            status, _, body = await pool.request(b"GET", b"/two", timeout_s=2)
        assert (status, body) == (200, b"GET /two conn=0 len=0")
        assert server.accepted == 1  # the same connection served the next request
        failures = [r for r in caplog.records if r.getMessage() == "upstream callback failed"]
        assert len(failures) == 1
        assert failures[0].exc_info is not None and isinstance(failures[0].exc_info[1], RuntimeError)

    scenario()


# --- cancellation --------------------------------------------------------------------------------------


@with_pool(by_path({"/stall": stall}))
async def test_cancelling_a_waiting_request_closes_its_connection(server: FakeServer, pool: H1Pool) -> None:
    await pool.request(b"GET", b"/warm", timeout_s=2)
    task = asyncio.ensure_future(pool.request(b"GET", b"/stall", timeout_s=2))
    await until(lambda: len(server.requests) == 2)  # it is on the wire, waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: server.client_closed == 1)  # its connection's state is unknown: closed
    assert not pool._idle and not pool._busy
    status, _, body = await pool.request(b"GET", b"/after", timeout_s=2)
    assert (status, body) == (200, b"GET /after conn=1 len=0")
    assert server.accepted == 2


@with_pool()
async def test_cancelling_while_connecting_drops_the_new_connection(server: FakeServer, pool: H1Pool) -> None:
    task = asyncio.ensure_future(pool.request(b"GET", b"/never", timeout_s=2))
    await asyncio.sleep(0)  # `start` ran and began connecting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await until(lambda: server.client_closed == 1)
    assert server.accepted == 1
    assert server.requests == []  # the request was never sent
    assert not pool._idle and not pool._busy
    assert (await pool.request(b"GET", b"/after", timeout_s=2))[0] == 200


@with_pool()
async def test_a_cancel_racing_a_finished_response_leaves_the_connection_alone(
    server: FakeServer, pool: H1Pool
) -> None:
    """Task A's response has arrived (its connection went back to the idle list and another call took
    it), but A is cancelled before it resumes. Its `abandon` must not close the connection that now
    carries the other call: that call would be sent twice (once there, once on a retry)."""
    await pool.request(b"GET", b"/warm", timeout_s=2)
    a = asyncio.ensure_future(pool.request(b"GET", b"/a", timeout_s=2))
    b = Outcomes()
    loop = asyncio.get_running_loop()

    def ticker() -> None:  # runs once per loop iteration, before the I/O callbacks of that iteration
        if pool._idle and len(server.requests) == 2:  # A's answer came in the previous iteration
            pool.start(b"POST", b"/b", body=b"not idempotent", timeout_s=2, callback=b)
            a.cancel()  # before A's task has resumed from its (already done) future
            return
        if not a.done():
            loop.call_soon(ticker)

    loop.call_soon(ticker)
    with pytest.raises(asyncio.CancelledError):
        await a
    response, exc = await b.wait()
    assert exc is None and response is not None and response[0] == 200
    await asyncio.sleep(0.05)
    assert [r.path for r in server.requests].count("/b") == 1, [
        (r.connection, r.path) for r in server.requests
    ]
    assert server.accepted == 1


# --- close() -------------------------------------------------------------------------------------------


@with_pool(stall)
async def test_close_fails_a_request_in_flight_on_a_new_connection(server: FakeServer, pool: H1Pool) -> None:
    task = asyncio.ensure_future(pool.request(b"GET", b"/stall", timeout_s=3))
    await until(lambda: len(server.requests) == 1)
    pool.close()
    with pytest.raises(ConnectionLost):
        await task
    await until(lambda: server.client_closed == 1)
    assert server.accepted == 1


@with_pool(by_path({"/stall": stall}))
async def test_close_fails_a_request_in_flight_on_a_reused_connection(
    server: FakeServer, pool: H1Pool
) -> None:
    """`close()` promises ConnectionLost for requests in flight; a call on a reused connection must not
    be taken for a stale idle socket and retried on a new connection of the closed pool."""
    await pool.request(b"GET", b"/warm", timeout_s=2)
    outcomes = Outcomes()
    pool.start(b"POST", b"/stall", body=b"x", timeout_s=1, callback=outcomes)
    await until(lambda: len(server.requests) == 2)
    pool.close()
    response, exc = await outcomes.wait()
    assert response is None and isinstance(exc, ConnectionLost), exc
    await asyncio.sleep(0.05)
    assert server.accepted == 1, "the closed pool opened a new connection and sent the request again"
    assert len(server.requests) == 2


@with_pool()
async def test_close_while_connecting_fails_the_call_once(server: FakeServer, pool: H1Pool) -> None:
    outcomes = Outcomes()
    pool.start(b"GET", b"/", timeout_s=2, callback=outcomes)
    await asyncio.sleep(0)  # the connect task has started
    pool.close()
    response, exc = await outcomes.wait()
    assert response is None and isinstance(exc, ConnectionLost)
    assert "closed" in str(exc)
    assert server.requests == []


@with_pool(_slow_echo)
async def test_close_closes_idle_connections(server: FakeServer, pool: H1Pool) -> None:
    await asyncio.gather(*(pool.request(b"GET", b"/", timeout_s=2) for _ in range(3)))
    assert server.accepted == 3
    pool.close()
    assert not pool._idle
    await until(lambda: server.client_closed == 3)


# --- malformed responses -----------------------------------------------------------------------------


async def _garbage(request: Received, writer: asyncio.StreamWriter) -> bool:
    if request.path == "/ok":
        return await echo(request, writer)
    writer.write(b"garbage\r\n\r\n")
    return True


@with_pool(_garbage)
async def test_a_malformed_response_is_connection_lost_and_not_retried(
    server: FakeServer, pool: H1Pool
) -> None:
    with pytest.raises(ConnectionLost, match="bad response"):
        await pool.request(b"GET", b"/bad", timeout_s=2)
    await pool.request(b"GET", b"/ok", timeout_s=2)
    with pytest.raises(ConnectionLost, match="bad response"):  # on a reused connection: no retry either
        await pool.request(b"GET", b"/bad", timeout_s=2)
    await until(lambda: server.client_closed == 2)
    assert server.accepted == 2
    assert [r.path for r in server.requests] == ["/bad", "/ok", "/bad"]


# --- Upstream ------------------------------------------------------------------------------------------


def endpoint_for(url: str) -> TritonEndpoint:
    return TritonEndpoint.connect(
        name="fake", http_url=url, grpc_url="127.0.0.1:1", timeout_s=1, load_timeout_s=1
    )


def upstream_scenario(
    handler: Handler, *, servers: int = 1, timeout_s: float = 0.2
) -> Callable[[Callable[[list[FakeServer], Upstream], Awaitable[None]]], Callable[[], None]]:
    def decorate(body: Callable[[list[FakeServer], Upstream], Awaitable[None]]) -> Callable[[], None]:
        async def scenario() -> None:
            fakes = [await FakeServer(handler).start() for _ in range(servers)]
            endpoints = [endpoint_for(fake.url) for fake in fakes]
            upstream = Upstream(endpoints, timeout_s=timeout_s)
            try:
                await body(fakes, upstream)
            finally:
                await upstream.close()
                for endpoint in endpoints:
                    endpoint.close()
                for fake in fakes:
                    await fake.stop()

        def test() -> None:
            run(scenario())

        test.__name__ = body.__name__
        return test

    return decorate


@upstream_scenario(by_path({"/stall": stall}))
async def test_upstream_request_success_and_timeout(fakes: list[FakeServer], upstream: Upstream) -> None:
    answer = await upstream.request(b"POST", "/v2/models/m/infer", body=b"abc")
    assert isinstance(answer, UpstreamResponse)
    assert answer.status == 200
    assert answer.body == b"POST /v2/models/m/infer conn=0 len=3"
    assert answer.headers[b"x-echo-path"] == b"/v2/models/m/infer"
    with pytest.raises(UpstreamTimeout) as caught:
        await upstream.request(b"GET", "/stall")
    assert caught.value.status_code == 504
    assert isinstance(caught.value.__cause__, TimeoutError)


def test_upstream_request_when_nothing_listens_is_triton_unreachable() -> None:
    async def scenario() -> None:
        endpoint = endpoint_for(f"http://127.0.0.1:{free_port()}")
        upstream = Upstream([endpoint], timeout_s=0.2)
        try:
            with pytest.raises(TritonUnreachable) as caught:
                await upstream.request(b"GET", "/v2")
            assert caught.value.status_code == 503
            assert caught.value.retry_after == 1
            assert caught.value.message == "the inference server is unavailable right now"
            assert "127.0.0.1" not in caught.value.message  # no internal address to tenants
        finally:
            await upstream.close()
            endpoint.close()

    run(scenario())


@upstream_scenario(_close_without_answer)
async def test_upstream_request_connection_lost_is_triton_unreachable(
    fakes: list[FakeServer], upstream: Upstream
) -> None:
    with pytest.raises(TritonUnreachable) as caught:
        await upstream.request(b"GET", "/v2")
    assert caught.value.status_code == 503 and caught.value.retry_after == 1
    assert caught.value.message == "the inference server is unavailable right now"


@upstream_scenario(by_path({"/stall": stall}))
async def test_upstream_start_passes_responses_and_errors(
    fakes: list[FakeServer], upstream: Upstream
) -> None:
    got: list[UpstreamResponse | AppError] = []
    event = asyncio.Event()

    def callback(outcome: UpstreamResponse | AppError) -> None:
        got.append(outcome)
        event.set()

    upstream.start(b"POST", b"/infer", body=b"12345", headers=[(b"X-A", b"1")], callback=callback)
    await asyncio.wait_for(event.wait(), 2)
    [ok] = got
    assert isinstance(ok, UpstreamResponse)
    assert (ok.status, ok.body) == (200, b"POST /infer conn=0 len=5")
    assert fakes[0].requests[0].header("x-a") == ["1"]

    event.clear()
    upstream.start(b"GET", b"/stall", callback=callback)
    await asyncio.wait_for(event.wait(), 2)
    await asyncio.sleep(0.05)
    assert len(got) == 2
    assert isinstance(got[1], UpstreamTimeout) and got[1].status_code == 504


def test_upstream_start_when_nothing_listens_passes_triton_unreachable() -> None:
    async def scenario() -> None:
        endpoint = endpoint_for(f"http://127.0.0.1:{free_port()}")
        upstream = Upstream([endpoint], timeout_s=0.5)
        got: list[UpstreamResponse | AppError] = []
        try:
            upstream.start(b"GET", b"/", callback=got.append)
            await until(lambda: bool(got))
            await asyncio.sleep(0.05)
            [error] = got
            assert isinstance(error, TritonUnreachable)
            assert error.status_code == 503 and error.retry_after == 1
        finally:
            await upstream.close()
            endpoint.close()

    run(scenario())


@upstream_scenario(echo, servers=2, timeout_s=2)
async def test_upstream_round_robins_and_keeps_a_pool_per_endpoint(
    fakes: list[FakeServer], upstream: Upstream
) -> None:
    for _ in range(6):
        assert (await upstream.request(b"GET", "/")).status == 200
    assert [len(fake.requests) for fake in fakes] == [3, 3]
    assert [fake.accepted for fake in fakes] == [1, 1]
    await upstream.close()
    await until(lambda: all(fake.client_closed == 1 for fake in fakes))


def test_upstream_without_endpoints_is_unreachable() -> None:
    upstream = Upstream([], timeout_s=1)
    with pytest.raises(TritonUnreachable) as caught:
        upstream.pick()
    assert caught.value.status_code == 503
    assert caught.value.retry_after == 5
