"""The fast-path protocol at the HTTP/1.1 level: keep-alive (and its idle timeout), pipelining order,
Connection: close. Limits are in test_connection_limits."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httptools
import pytest

from control_plane.dataplane import fastpath
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx

BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}
).encode()


class _Responses:
    def __init__(self) -> None:
        self.done: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._body = b""
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""


def _request(path: str, d: Deployed, *, body: bytes = BODY, extra: str = "", method: str = "POST") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {d.consumer_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _exchange(
    api: Api, payload: bytes, *, expect: int
) -> tuple[list[tuple[int, dict[bytes, bytes], bytes]], bool]:
    """Send raw bytes on one connection; the responses, and whether the server closed the connection."""
    host, port = api.client.base_url.host, api.client.base_url.port
    responses = _Responses()
    closed = False
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(payload)
        while len(responses.done) < expect:
            data = sock.recv(65536)
            if not data:
                closed = True
                break
            responses.parser.feed_data(data)
        if not closed:
            sock.settimeout(0.3)
            try:
                closed = sock.recv(1) == b""
            except TimeoutError:
                closed = False
    return responses.done, closed


@pytest.fixture
def deployed(make_served: Callable[..., Api], tmp_path: Path) -> tuple[Api, Deployed]:
    api = make_served()
    return api, deploy_onnx(api, tmp_path)


def test_keep_alive_serves_many_requests_on_one_connection(deployed: tuple[Api, Deployed]) -> None:
    api, d = deployed
    request = _request(f"/v2/models/{d.model}/infer", d)
    done, closed = _exchange(api, request, expect=1)
    assert [status for status, _, _ in done] == [200]
    assert not closed
    assert json.loads(done[0][2])["model_name"] == d.model
    assert b"gateway;dur=" in done[0][1][b"server-timing"]


def test_pipelined_requests_are_answered_in_order(deployed: tuple[Api, Deployed]) -> None:
    api, d = deployed
    infer = _request(f"/v2/models/{d.model}/infer", d)
    metadata = _request(f"/v2/models/{d.model}", d, body=b"", method="GET")  # the ASGI path
    missing = _request("/v2/models/nope/infer", d)
    done, _ = _exchange(api, infer + metadata + infer + missing + infer, expect=5)
    assert [status for status, _, _ in done] == [200, 200, 200, 404, 200]
    assert "outputs" in json.loads(done[0][2])
    assert json.loads(done[1][2])["name"] == d.model
    assert json.loads(done[3][2])["kind"] == "NotFound"


def test_connection_close_is_honoured(deployed: tuple[Api, Deployed]) -> None:
    api, d = deployed
    done, closed = _exchange(
        api, _request(f"/v2/models/{d.model}/infer", d, extra="Connection: close\r\n"), expect=1
    )
    assert [status for status, _, _ in done] == [200]
    assert done[0][1][b"connection"] == b"close"
    assert closed


def _wait_closed(sock: socket.socket, *, within: float) -> float:
    """Seconds until the server closed `sock` (fails if it did not within `within`)."""
    began = time.monotonic()
    sock.settimeout(within)
    try:
        assert sock.recv(1) == b"", "unexpected data on an idle connection"
    except TimeoutError:
        pytest.fail(f"the server kept an idle connection open for more than {within}s")
    return time.monotonic() - began


def test_idle_keep_alive_connections_close_after_the_timeout_and_busy_ones_stay(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_served(timeout_keep_alive=1)
    d = deploy_onnx(api, tmp_path)
    infer = _request(f"/v2/models/{d.model}/infer", d)
    host, port = api.client.base_url.host, api.client.base_url.port
    with socket.create_connection((host, port), timeout=30) as sock:
        responses = _Responses()
        began = time.monotonic()
        while time.monotonic() - began < 2.5:  # busier than the timeout: the connection must stay open
            sock.sendall(infer)
            expected = len(responses.done) + 1
            while len(responses.done) < expected:
                data = sock.recv(65536)
                assert data, "the server closed a connection in use"
                responses.parser.feed_data(data)
            time.sleep(0.3)
        assert {status for status, _, _ in responses.done} == {200}
        assert len(responses.done) >= 6
        idle_for = _wait_closed(sock, within=5)
    assert 0.5 < idle_for < 2.5
    with socket.create_connection((host, port), timeout=30) as sock:  # the same after an ASGI request
        sock.sendall(_request(f"/v2/models/{d.model}", d, body=b"", method="GET") + infer)
        responses = _Responses()
        while len(responses.done) < 2:
            responses.parser.feed_data(sock.recv(65536))
        assert [status for status, _, _ in responses.done] == [200, 200]
        assert 0.5 < _wait_closed(sock, within=5) < 2.5


def test_a_bug_of_ours_before_the_body_is_a_500_not_the_clients_bad_request(
    deployed: tuple[Api, Deployed], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception we did not foresee while the headers are checked (a limit's arithmetic, say) was raised
    out of the parser's callback, and uvicorn answered it as the client's 'Invalid HTTP request' (400)."""
    api, d = deployed

    def broken(*_: object) -> None:
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr(fastpath, "check_limits", broken)
    infer = _request(f"/v2/models/{d.model}/infer", d)
    done, _ = _exchange(api, infer, expect=1)

    status, _, body = done[0]
    assert status == 500, body
    assert json.loads(body) == {"error": "internal error", "kind": "InternalError"}
    assert b"infinity" not in body  # nothing internal reaches the client; the log has it
    assert any(r.exc_info and r.exc_info[0] is OverflowError for r in caplog.records)
