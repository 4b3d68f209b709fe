"""Connection-level limits on the real served app (uvicorn + the fast path): timeouts, header and body
limits, refusals before the body is read, truncated bodies never forwarded, write backpressure."""

from __future__ import annotations

import gzip
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.procs import free_port
from tests.support.rawhttp import exchange, read_answer, request_head

BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}
).encode()
LIMITS = {
    "header_timeout_s": 0.5,
    "body_timeout_s": 0.5,
    "max_request_bytes": 4096,
    "max_header_bytes": 8192,
    "max_header_count": 20,
}


@pytest.fixture
def deployed(make_served: Callable[..., Api], tmp_path: Path) -> tuple[Api, Deployed]:
    api = make_served(**LIMITS)
    return api, deploy_onnx(api, tmp_path)


def _port(api: Api) -> int:
    port = api.client.base_url.port
    assert port is not None
    return port


def _auth(d: Deployed) -> dict[str, str]:
    return {"Authorization": f"Bearer {d.consumer_key}"}


@pytest.fixture
def connect(deployed: tuple[Api, Deployed]) -> Iterator[Callable[[], socket.socket]]:
    sockets: list[socket.socket] = []

    def make() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", _port(deployed[0])), timeout=10)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def _answer_within(sock: socket.socket, seconds: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    began = time.monotonic()
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for more than {seconds}s; got {data[:200]!r}")
    return data, time.monotonic() - began


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1]) if raw else 0


def test_headers_that_never_finish_get_408_within_the_header_timeout(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    _, d = deployed
    sock = connect()
    sock.sendall(f"POST /v2/models/{d.model}/infer HTTP/1.1\r\nHost: x\r\n".encode())
    raw, took = _answer_within(sock, 5)
    assert _status(raw) == 408
    assert b"RequestTimeout" in raw and b"connection: close" in raw
    assert 0.4 < took < 2.5


def test_a_body_that_stalls_gets_408_and_is_never_forwarded(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    api, d = deployed
    for path in (f"/v2/models/{d.model}/infer", f"/v1/predict/{d.model}"):  # fast path and ASGI path
        before = _triton_inferences(api, d)
        sock = connect()
        head = request_head("POST", path, _port(api), {**_auth(d), "Content-Length": str(len(BODY))})
        sock.sendall(head + BODY[:20])
        raw, took = _answer_within(sock, 5)
        assert _status(raw) == 408, raw
        assert 0.4 < took < 2.5
        assert _triton_inferences(api, d) == before, path


def test_a_client_gone_mid_body_is_never_forwarded(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    api, d = deployed
    predict = json.dumps({"inputs": {"x": [[1, 2, 3, 4]]}}).encode()
    for path, body in ((f"/v2/models/{d.model}/infer", BODY), (f"/v1/predict/{d.model}", predict)):
        before = _triton_inferences(api, d)
        sock = connect()
        head = request_head("POST", path, _port(api), {**_auth(d), "Content-Length": str(len(body))})
        sock.sendall(head + body[:-5])
        time.sleep(0.1)
        sock.close()
        time.sleep(0.3)
        assert _triton_inferences(api, d) == before, path
    assert api.client.post(f"/v2/models/{d.model}/infer", content=BODY, headers=_auth(d)).status_code == 200


def test_an_idle_connection_that_sends_nothing_is_closed(
    make_served: Callable[..., Api], connect: Callable[[], socket.socket], deployed: tuple[Api, Deployed]
) -> None:
    sock = connect()
    raw, took = _answer_within(sock, 15)
    assert raw == b""
    # The header timeout (0.5 s here), not the keep-alive time (5 s): CP_HTTP_KEEP_ALIVE_S may be raised to
    # minutes behind a load balancer, and a connection that never sends a request must not be held that
    # long (it was: max(header timeout, keep-alive)). uvicorn alone waits forever.
    assert took < 3, took


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Big": "a" * 9000}, "or 8192 bytes"),
        ({f"X-H{i}": "v" for i in range(30)}, "over the limit of 20 headers"),
    ],
    ids=["header-bytes", "header-count"],
)
def test_oversized_headers_get_431(
    deployed: tuple[Api, Deployed], headers: dict[str, str], expected: str
) -> None:
    api, d = deployed
    for path in (f"/v2/models/{d.model}/infer", "/v1/tenants"):
        answer = exchange(_port(api), request_head("POST", path, _port(api), {**_auth(d), **headers}), BODY)
        assert answer.status == 431, answer
        assert expected in answer.body.decode()
        assert answer.elapsed < 1


def test_a_declared_length_over_the_limit_is_refused_before_any_body(deployed: tuple[Api, Deployed]) -> None:
    api, d = deployed
    for path in (f"/v2/models/{d.model}/infer", f"/v1/predict/{d.model}", "/v1/tenants"):
        head = request_head("POST", path, _port(api), {**_auth(d), "Content-Length": "100000000"})
        answer = exchange(_port(api), head, b"", timeout=3)
        assert answer.status == 413, (path, answer)
        assert answer.elapsed < 1
        body = json.loads(answer.body)
        assert "over the limit of 4096" in (body.get("detail") or body["error"])


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    api, d = deployed
    for path in (f"/v2/models/{d.model}/infer", f"/v1/predict/{d.model}"):
        sock = connect()
        head = request_head("POST", path, _port(api), {**_auth(d), "Transfer-Encoding": "chunked"})
        sock.sendall(head + b"1400\r\n" + b"a" * 0x1400 + b"\r\n")  # 5 KiB; the stream never ends
        raw, took = _answer_within(sock, 5)
        assert _status(raw) == 413, raw
        assert took < 1


def test_an_answer_before_a_small_body_keeps_the_connection(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    """/v1/predict (the ASGI path) answers an unknown model from the headers; the body that follows is
    read past and the next request on the connection is served (the connection was closed before, and
    a body already on its way turned the close into a reset: httpx's "Connection reset by peer")."""
    api, d = deployed
    predict = json.dumps({"inputs": {"x": [[1, 2, 3, 4]]}}).encode()
    sock = connect()
    length = {"Content-Length": str(len(predict))}
    sock.sendall(request_head("POST", "/v1/predict/no-such-model", _port(api), {**_auth(d), **length}))
    first = read_answer(sock)
    assert first.status == 404, first
    assert "connection" not in first.headers
    sock.sendall(predict)
    sock.sendall(request_head("POST", f"/v1/predict/{d.model}", _port(api), {**_auth(d), **length}) + predict)
    second = read_answer(sock)
    assert second.status == 200, second
    assert json.loads(second.body)["model"] == d.model


def test_a_big_body_refused_early_is_dropped_not_reset(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    """A Content-Length over the limit is refused from the headers, but the client is still sending:
    the server drops what comes (it does not reset the connection), and closes when the client does."""
    api, d = deployed
    big = 3_000_000
    for path in (f"/v2/models/{d.model}/infer", f"/v1/predict/{d.model}"):
        sock = connect()
        sock.sendall(request_head("POST", path, _port(api), {**_auth(d), "Content-Length": str(big)}))
        failures: list[OSError] = []
        writer = threading.Thread(target=_send_all, args=(sock, b"a" * big, failures))
        writer.start()
        answer = read_answer(sock)
        writer.join(timeout=10)
        assert answer.status == 413, (path, answer)
        assert "over the limit of 4096" in answer.body.decode()
        assert not failures, f"{path}: the body in flight was reset: {failures}"
        sock.shutdown(socket.SHUT_WR)
        rest, took = _answer_within(sock, 5)
        assert rest == b"" and took < 1, path


def test_an_answer_before_a_streamed_body_closes_without_a_reset(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    """A chunked body of unknown length answered early (404 from the headers): the connection ends
    with the answer, and chunks the client still sends are dropped, not answered with a reset."""
    api, d = deployed
    sock = connect()
    chunked = {"Transfer-Encoding": "chunked"}
    sock.sendall(request_head("POST", "/v1/predict/no-such-model", _port(api), {**_auth(d), **chunked}))
    answer = read_answer(sock)
    assert answer.status == 404, answer
    for _ in range(20):
        sock.sendall(b"400\r\n" + b"a" * 0x400 + b"\r\n")
        time.sleep(0.01)
    rest, _ = _answer_within(sock, 5)  # raises on a reset
    assert rest == b""


def _send_all(sock: socket.socket, data: bytes, failures: list[OSError]) -> None:
    try:
        sock.sendall(data)
    except OSError as exc:
        failures.append(exc)


def test_gzip_bodies_are_served_and_limited_once_decompressed(deployed: tuple[Api, Deployed]) -> None:
    api, d = deployed
    url = f"/v2/models/{d.model}/infer"
    packed = {**_auth(d), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    ok = api.client.post(url, content=gzip.compress(BODY), headers=packed)
    assert ok.status_code == 200, ok.text
    assert ok.json()["model_name"] == d.model
    bomb = gzip.compress(b" " * 1_000_000)  # about 1 KB, decompresses to 1 MB
    refused = api.client.post(url, content=bomb, headers=packed)
    assert refused.status_code == 413, refused.text
    assert "once decompressed" in refused.json()["error"]
    brotli = api.client.post(url, content=BODY, headers={**_auth(d), "Content-Encoding": "br"})
    assert brotli.status_code == 415
    assert brotli.json()["kind"] == "UnsupportedMediaType"


def test_a_client_that_does_not_read_stops_being_read(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    api, d = deployed
    # Answered on the fast path without Triton (unknown model), so the answers pile up quickly.
    request = request_head(
        "POST", "/v2/models/nope/infer", _port(api), {**_auth(d), "Content-Length": str(len(BODY))}
    )
    one = request + BODY
    stream = memoryview(one * 2000)
    sock = connect()
    sock.setblocking(False)
    sent = 0  # bytes
    while sent < 200_000 * len(one):  # ~60 MB of requests whose ~40 MB of answers nobody reads
        if not select.select([], [sock], [], 1.0)[1]:
            break  # the server stopped reading
        sent += sock.send(stream[sent % len(stream) :])
    started = -(-sent // len(one))  # requests begun, the last maybe in part
    assert started < 200_000, "the server kept reading requests while its answers piled up unread"
    sock.setblocking(True)
    sock.settimeout(30)
    rest = one[len(one) - (-sent % len(one)) :]  # the end of the request in part, sent once reading resumes
    threading.Thread(target=sock.sendall, args=(rest,), daemon=True).start()
    received = b""
    while received.count(b"HTTP/1.1 404 ") < started:  # the answers all arrive once read, in order
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {received.count(b'HTTP/1.1 404 ')} of {started} answers"
        received += chunk


def test_metrics_need_the_admin_key_or_the_metrics_token(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_served(metrics_token="metrics-secret")
    d = deploy_onnx(api, tmp_path)
    assert api.client.post(f"/v2/models/{d.model}/infer", content=BODY, headers=_auth(d)).status_code == 200
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    consumer = api.client.get("/metrics", headers=_auth(d))
    assert consumer.status_code == 403
    assert d.model not in consumer.text
    for key in ("metrics-secret", api.admin_token):
        answer = api.client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200
        assert f'model="{d.model}"' in answer.text


def _triton_inferences(api: Api, d: Deployed) -> int:
    """How many requests Triton itself has executed for the version."""
    url = api.state.tritons[0].http_url
    stats = httpx.get(f"{url}/v2/models/{d.triton_name}/stats", timeout=10).json()
    return int(stats["model_stats"][0]["inference_stats"]["success"]["count"]) + int(
        stats["model_stats"][0]["inference_stats"]["fail"]["count"]
    )


def test_grpc_has_the_same_connection_limits(
    make_served: Callable[..., Api], triton: RunningTriton, tmp_path: Path
) -> None:
    grpc_port = free_port()
    api = make_served(
        **{**LIMITS, "header_timeout_s": 1.0},
        grpc_port=grpc_port,
        triton_grpc_urls=[triton.process.grpc_url],
    )
    d = deploy_onnx(api, tmp_path)
    with socket.create_connection(("127.0.0.1", grpc_port), timeout=10) as silent:
        _, took = _answer_within(silent, 8)  # says nothing: dropped after the handshake timeout
    assert took < 5
    metadata = [("authorization", f"Bearer {d.consumer_key}"), ("x-big", "a" * 20_000)]
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        ready = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as refused:
            ready(pb.ModelReadyRequest(name=d.model), metadata=metadata, timeout=5)
        assert refused.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL)
        answer = ready(pb.ModelReadyRequest(name=d.model), metadata=metadata[:1], timeout=5)
    assert answer.ready


def test_a_flood_of_pipelined_requests_is_not_queued(
    deployed: tuple[Api, Deployed], connect: Callable[[], socket.socket]
) -> None:
    """httptools parses all one read holds: 256 KiB of pipelined GETs queued 9.4k requests in one go
    (0.16-0.22 s of the event loop). Past 32 queued the connection is closed; those queued are answered
    first, in order."""
    api, _ = deployed
    sock = connect()
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n" * 2000)
    answer, _ = _answer_within(sock, 10)
    answered = answer.count(b"HTTP/1.1 ")
    assert 1 <= answered <= 34, answered  # the one being answered, those queued, maybe the refusal
    assert api.client.get("/v2/health/live").status_code == 200
    calm = connect()
    calm.sendall(
        b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\n\r\n" * 8
        + b"GET /v2/health/live HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    )
    answer, _ = _answer_within(calm, 10)
    assert answer.count(b"HTTP/1.1 200") == 9
