"""The data plane's choice of instance and its one retry, against small real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from control_plane.dataplane.upstream import TritonUnreachable, Upstream, UpstreamResponse
from control_plane.errors import AppError, UpstreamTimeout
from control_plane.fleet.instances import TritonEndpoint
from control_plane.tritonserver import free_port

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def _read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
    await reader.readexactly(length)
    return True


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        try:
            await _read_request(reader)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        writer.write(OK)
        await writer.drain()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request and closes the connection without a byte of answer (a crashed Triton)."""
    await _read_request(reader)
    writer.transport.abort()


async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Starts answering, then dies: the request may have run, so it must not be sent again."""
    await _read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    await writer.drain()
    writer.transport.abort()


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _read_request(reader)
    await asyncio.sleep(5)


class Server:
    """One loopback HTTP server with a behaviour; counts the requests it got."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.requests += 1
            try:
                await self.behaviour(reader, writer)
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


def endpoint(name: str, url: str) -> TritonEndpoint:
    return TritonEndpoint.connect(
        name=name, http_url=url, grpc_url="127.0.0.1:1", timeout_s=1, load_timeout_s=1
    )


def scenario(*behaviours: Behaviour | None, timeout_s: float = 2.0) -> Callable[..., Callable[[], None]]:
    """Run the test body with an Upstream over instances a, b, ... (None: nothing listens)."""

    def decorate(body: Callable[[Upstream, list[Server]], Awaitable[None]]) -> Callable[[], None]:
        def test() -> None:
            async def run() -> None:
                servers = [Server(b) for b in behaviours if b is not None]
                urls = iter([await s.start() for s in servers])
                endpoints = [
                    endpoint(
                        chr(ord("a") + i), next(urls) if b is not None else f"http://127.0.0.1:{free_port()}"
                    )
                    for i, b in enumerate(behaviours)
                ]
                upstream = Upstream(endpoints, timeout_s=timeout_s)
                try:
                    await body(upstream, servers)
                finally:
                    await upstream.close()
                    for server in servers:
                        server.stop()
                    for e in endpoints:
                        e.close()

            asyncio.run(run())

        test.__name__ = body.__name__
        return test

    return decorate


async def send(upstream: Upstream, triton_name: str = "m") -> UpstreamResponse | AppError:
    done: asyncio.Future[UpstreamResponse | AppError] = asyncio.get_running_loop().create_future()
    path = b"/v2/models/m/infer"
    upstream.start(b"POST", path, body=b"{}", callback=done.set_result, triton_name=triton_name)
    return await asyncio.wait_for(done, 5)


@scenario(answer, answer)
async def test_requests_go_only_where_the_version_is_ready(upstream: Upstream, servers: list[Server]) -> None:
    upstream.route({"m": ("b",)})
    for _ in range(4):
        assert isinstance(await send(upstream), UpstreamResponse)
    assert [s.requests for s in servers] == [0, 1]  # one keep-alive connection to b
    for _ in range(4):  # a model no route names: any instance, in turn
        assert isinstance(await send(upstream, "other"), UpstreamResponse)
    assert servers[0].requests == 1


@scenario(stall, answer, timeout_s=0.3)
async def test_the_instance_with_the_fewest_outstanding_requests_is_chosen(
    upstream: Upstream, servers: list[Server]
) -> None:
    upstream.route({"slow": ("a",), "m": ("a", "b")})
    slow = asyncio.ensure_future(send(upstream, "slow"))  # stays outstanding on a
    await asyncio.sleep(0.05)
    for _ in range(5):
        assert isinstance(await send(upstream), UpstreamResponse)
    assert servers[1].requests == 1, "all five went to b, on one connection"
    assert isinstance(await slow, UpstreamTimeout), "a timeout is not retried: the request may be running"
    assert upstream.retries == {}


@scenario(hang_up, answer)
async def test_a_request_that_got_no_answer_is_retried_once_elsewhere_and_the_instance_avoided(
    upstream: Upstream, servers: list[Server]
) -> None:
    downs: list[str] = []
    upstream.on_down = downs.append
    upstream.route({"m": ("a", "b")})
    results = [await send(upstream) for _ in range(6)]
    assert all(isinstance(r, UpstreamResponse) and r.status == 200 for r in results)
    assert upstream.retries == {("a", "http"): 1} and downs == ["a"]
    assert servers[0].requests == 1, "once failed, a is avoided"
    upstream.seen_ready(["a"], probed_at=time.monotonic())  # the loop saw it ready again
    await send(upstream)
    await send(upstream)
    assert servers[0].requests == 2


@scenario(None, answer)
async def test_a_refused_connection_is_retried_elsewhere(upstream: Upstream, servers: list[Server]) -> None:
    for _ in range(3):
        response = await upstream.request(b"GET", "/v2/models/m/ready")
        assert response.status == 200
    assert upstream.retries == {("a", "http"): 1}


@scenario(half_answer, half_answer)
async def test_an_answer_cut_short_is_not_retried(upstream: Upstream, servers: list[Server]) -> None:
    first = await send(upstream)
    assert isinstance(first, TritonUnreachable) and first.status_code == 503 and first.retry_after == 1
    assert upstream.retries == {} and sorted(s.requests for s in servers) == [0, 1]


@scenario(None)
async def test_one_instance_down_is_503_with_retry_after(upstream: Upstream, servers: list[Server]) -> None:
    result = await send(upstream)
    assert isinstance(result, TritonUnreachable) and result.retry_after == 1
    assert upstream.retries == {}
    with pytest.raises(TritonUnreachable):
        await upstream.request(b"GET", "/v2/models/m/ready")
