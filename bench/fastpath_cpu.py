"""The proxy's own Python CPU per inference request, without sockets, Triton or a load generator.

    python -m bench.fastpath_cpu [--requests 50000] [--repeat 5]

Drives the real fast-path protocol (uvicorn's httptools parser, auth, routing, limits, metrics,
the upstream pool and the response rewrite) with in-memory transports: the client's request bytes
go into `data_received`, the upstream connection answers with Triton's bytes as soon as it is
written to. What it prints is the CPU the control plane itself spends per request, the part of
`bench.proxy_overhead`'s "cpu us/req proxy" that is not the kernel's socket work; it is stable
enough to compare two versions of the hot path, which the end-to-end benchmark on a 2-core machine
is not.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from types import SimpleNamespace
from typing import Any, cast

import uvicorn
from fastapi import FastAPI
from uvicorn.server import ServerState

from control_plane.dataplane.checks import RequestChecks
from control_plane.dataplane.contract import Contract, TensorRule
from control_plane.dataplane.fastpath import fast_path_protocol
from control_plane.dataplane.h1client import _Connection
from control_plane.dataplane.heavy import HeavyWork
from control_plane.dataplane.limits import TenantLimits
from control_plane.dataplane.metrics import DataPlaneMetrics
from control_plane.dataplane.upstream import Upstream
from control_plane.fleet.instances import TritonEndpoint
from control_plane.keys.secrets import generate
from control_plane.residency.manager import Residency
from control_plane.routing.router import Router
from control_plane.routing.table import AliasTarget, KeyEntry, ModelTarget, RoutingTable, VersionTarget
from control_plane.settings import Settings
from control_plane.state import AppState

TRITON_NAME = "acme--mlp--1--abcdef"
REQUEST_BODY = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.5,-1.0,2.0,0.25]}]}'
RESPONSE_BODY = (
    b'{"model_name":"' + TRITON_NAME.encode() + b'","model_version":"1","outputs":[{"name":"y",'
    b'"datatype":"FP32","shape":[1,3],"data":[0.39918699860572815,0.17332729697227478,'
    b"-0.17905406653881073]}]}"
)
UPSTREAM_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(RESPONSE_BODY)).encode()
    + b"\r\n\r\n"
    + RESPONSE_BODY
)


class _ClientTransport(asyncio.Transport):
    """Where the proxy writes its responses: counted, not sent."""

    def __init__(self) -> None:
        super().__init__()
        self.responses = 0
        self.last = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.responses += 1
        self.last = bytes(data)

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class _TritonTransport(_ClientTransport):
    """An upstream connection whose Triton answers the moment a request is written."""

    def __init__(self, connection: _Connection) -> None:
        super().__init__()
        self.connection = connection

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.connection.data_received(UPSTREAM_RESPONSE)


def _state(key: str, key_prefix: str, key_hash: str) -> AppState:
    router = Router(cast(Any, None))
    contract = Contract(
        inputs={"x": TensorRule("x", "FP32", (-1, 4))}, outputs=frozenset({"y"}), max_batch_size=8
    )
    version = VersionTarget(version=1, triton_name=TRITON_NAME, state="ready", contract=contract)
    model = ModelTarget(
        tenant="acme", name="mlp", model_id=1, versions={1: version}, aliases={"production": AliasTarget(1)}
    )
    router.table = RoutingTable(
        models={(1, "mlp"): model},
        tenants={1: "acme"},
        tenant_ids={"acme": 1},
        keys={key_prefix: KeyEntry(1, key_hash, "consumer", 1, key_prefix)},
    )
    endpoint = TritonEndpoint.connect(
        name="t0", http_url="http://127.0.0.1:9", grpc_url="127.0.0.1:10", timeout_s=1, load_timeout_s=1
    )
    settings = Settings(admin_token=None)
    state = SimpleNamespace(
        settings=settings,
        router=router,
        key_usage=SimpleNamespace(touch=lambda key_id: None),
        limits=TenantLimits(rate_per_s=1e9, burst=1_000_000, max_concurrency=1000),
        inflight=Counter(),
        residency=_resident(TRITON_NAME),
        metrics=DataPlaneMetrics(),
        upstream=Upstream([endpoint], timeout_s=30),
        shadow=None,
        checks=RequestChecks(
            HeavyWork(workers=1, per_tenant=1, queue_limit=1),
            limit=settings.max_request_bytes,
            inline_bytes=settings.inline_check_bytes,
        ),
    )
    return cast(AppState, state)


def _resident(triton_name: str) -> Residency:
    """Residency with the version loaded (the hot path's case: a set lookup)."""
    residency = Residency(session_factory=None, inflight=Counter())
    residency.resident = frozenset({triton_name})
    return residency


async def _run(requests: int, repeat: int) -> list[float]:
    new_key = generate()
    state = _state(new_key.plaintext, new_key.prefix, new_key.key_hash)
    app = FastAPI()
    app.state.cp = state
    protocol_class = fast_path_protocol(app)
    config = uvicorn.Config(app, http=protocol_class, loop="asyncio", log_level="warning")
    config.load()
    loop = asyncio.get_running_loop()
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    client = _ClientTransport()
    protocol.connection_made(client)
    pool = state.upstream._pool(state.upstream.endpoints[0])
    upstream = _Connection(pool)
    upstream.connection_made(_TritonTransport(upstream))
    pool._idle.append(upstream)
    request = (
        b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: cp\r\nUser-Agent: bench\r\n"
        b"Authorization: Bearer " + new_key.plaintext.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(REQUEST_BODY)).encode() + b"\r\n\r\n"
    ) + REQUEST_BODY
    protocol.data_received(request)
    if not client.last.startswith(b"HTTP/1.1 200") or b'"model_name":"mlp"' not in client.last:
        raise SystemExit(f"the fast path did not answer 200 with the client's model name:\n{client.last!r}")
    per_request_us = []
    for _ in range(repeat):
        began = time.process_time()
        for _ in range(requests):
            protocol.data_received(request)
        per_request_us.append((time.process_time() - began) / requests * 1e6)
    if client.responses != requests * repeat + 1:
        raise SystemExit(f"expected {requests * repeat + 1} responses, got {client.responses}")
    pool.close()
    return per_request_us


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000, help="requests per repeat")
    parser.add_argument("--repeat", type=int, default=5, help="measured repeats")
    args = parser.parse_args(argv)
    per_request_us = asyncio.run(_run(args.requests, args.repeat))
    rounds = " ".join(f"{us:.2f}" for us in per_request_us)
    print(f"fast path Python CPU per request: best {min(per_request_us):.2f} us (rounds: {rounds})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
