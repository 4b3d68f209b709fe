"""Our HTTP/2 server and client against each other over loopback: big messages both ways (flow control on
both sides), many calls multiplexed, deadlines, and an address where nothing listens."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

from control_plane.dataplane.grpc_server import GrpcServerConnection, ServerCall, ServerLimits
from control_plane.dataplane.h1client import ConnectionLost
from control_plane.dataplane.h2client import GrpcAnswer, H2Pool
from tests.support.procs import free_port

LIMITS = ServerLimits(
    header_timeout_s=5,
    body_timeout_s=5,
    max_header_bytes=64 * 1024,
    max_header_count=100,
    max_message_bytes=64 * 1024 * 1024,
)
Outcome = tuple[GrpcAnswer | None, BaseException | None]


class Echo:
    """Answers each call with its own message; calls to /x/Silent are never answered."""

    def screen(self, call: ServerCall) -> None:
        return None

    def on_call(self, connection: GrpcServerConnection, call: ServerCall, message: bytes) -> None:
        if call.path != b"/x/Silent":
            connection.reply(call, message)


def _settle(future: asyncio.Future[Outcome]) -> Callable[[GrpcAnswer | None, BaseException | None], None]:
    def settle(answer: GrpcAnswer | None, exc: BaseException | None) -> None:
        future.set_result((answer, exc))

    return settle


async def calls(
    pool: H2Pool, payloads: list[bytes], *, path: bytes = b"/x/Echo", timeout_s: float = 30
) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Outcome]] = []
    for payload in payloads:
        future: asyncio.Future[Outcome] = loop.create_future()
        pool.start(path, payload, timeout_s=timeout_s, callback=_settle(future))
        futures.append(future)
    return list(await asyncio.wait_for(asyncio.gather(*futures), timeout=60))


def run_against_echo(payloads: list[bytes], **kwargs: object) -> list[Outcome]:
    async def go() -> list[Outcome]:
        connections: set[GrpcServerConnection] = set()
        server = await asyncio.get_running_loop().create_server(
            lambda: GrpcServerConnection(Echo(), LIMITS, connections), "127.0.0.1", 0
        )
        pool = H2Pool(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", connections=2)
        try:
            return await calls(pool, payloads, **kwargs)  # type: ignore[arg-type]
        finally:
            pool.close()
            server.close()

    return asyncio.run(go())


def test_big_messages_both_ways_and_many_calls_multiplexed() -> None:
    payloads = [os.urandom(20 * 1024 * 1024), os.urandom(5 * 1024 * 1024)] + [
        os.urandom(100) for _ in range(200)
    ]
    outcomes = run_against_echo(payloads)
    for payload, (answer, exc) in zip(payloads, outcomes, strict=True):
        assert exc is None and answer is not None
        assert answer.number == 0 and answer.payload == payload


def test_a_call_past_its_deadline_times_out() -> None:
    [(answer, exc)] = run_against_echo([b"hello"], path=b"/x/Silent", timeout_s=0.2)
    assert answer is None and isinstance(exc, TimeoutError)


def test_nothing_listening_is_an_os_error() -> None:
    async def go() -> list[Outcome]:
        pool = H2Pool(f"127.0.0.1:{free_port()}")
        try:
            return await calls(pool, [b"x"])
        finally:
            pool.close()

    [(answer, exc)] = asyncio.run(go())
    assert answer is None and isinstance(exc, OSError) and not isinstance(exc, ConnectionLost)
