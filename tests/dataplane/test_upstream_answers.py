"""Answers from Triton that the proxy cannot use: each request still completes, as a 502, quickly.

The version is deployed on the real Triton; then the data plane's upstream is pointed at a scripted
server that answers every request with the same canned bytes.
"""

from __future__ import annotations

import re
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from control_plane.fleet.instances import TritonEndpoint
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.rawhttp import request_head

BODY = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.5,-1.0,2.0,0.25]}]}'
PREDICT = b'{"inputs":{"x":[[0.5,-1.0,2.0,0.25]]}}'


class _Canned(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    answer = b""


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:  # keep-alive: one canned answer per request
            length = 0
            line = self.rfile.readline()
            if not line:
                return
            while line not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                line = self.rfile.readline()
            self.rfile.read(length)
            self.wfile.write(self.server.answer)  # type: ignore[attr-defined]


@pytest.fixture
def canned(served: Api) -> Iterator[Callable[[bytes], None]]:
    server = _Canned(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    live = served.state.upstream.endpoints
    url = f"http://127.0.0.1:{server.server_address[1]}"
    served.state.upstream.endpoints = [
        TritonEndpoint.connect(
            name="canned", http_url=url, grpc_url="127.0.0.1:1", timeout_s=1, load_timeout_s=1
        )
    ]

    def answer(raw: bytes) -> None:
        server.answer = raw

    yield answer
    served.state.upstream.endpoints = live
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(make_served: Callable[..., Api]) -> Api:
    return make_served()


@pytest.fixture
def deployed(served: Api, tmp_path: Path) -> Deployed:
    return deploy_onnx(served, tmp_path)


def _ok(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in ("HTTP/1.1 200 OK", f"Content-Length: {len(body)}", *headers))
    return head.encode() + b"\r\n" + body


UNREADABLE = {
    "not-json": _ok(b"hello"),
    "header-length-not-a-number": _ok(b'{"outputs":[]}', "Inference-Header-Content-Length: abc"),
    "header-length-past-the-body": _ok(b'{"outputs":[]}', "Inference-Header-Content-Length: 999"),
    "json-but-no-outputs": _ok(b"[1, 2, 3]"),
}


@pytest.mark.parametrize("answer", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_an_unreadable_200_is_a_502_on_every_path_and_the_connection_goes_on(
    served: Api, deployed: Deployed, canned: Callable[[bytes], None], answer: bytes
) -> None:
    canned(answer)
    port = served.client.base_url.port
    assert port is not None
    auth = {"Authorization": f"Bearer {deployed.consumer_key}", "Content-Type": "application/json"}
    infer = request_head(
        "POST", f"/v2/models/{deployed.model}/infer", port, {**auth, "Content-Length": str(len(BODY))}
    )
    predict = request_head(
        "POST", f"/v1/predict/{deployed.model}", port, {**auth, "Content-Length": str(len(PREDICT))}
    )
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # Pipelined: the fast path's answer, then the ASGI path's, then the fast path's again.
        sock.sendall(infer + BODY + predict + PREDICT + infer + BODY)
        received = b""
        while len(re.findall(rb"HTTP/1\.1 \d{3} ", received)) < 3 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed early: {received!r}"
            received += chunk
    elapsed = time.monotonic() - started
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"502"] * 3
    assert b"the inference server's answer could not be read" in received
    assert elapsed < 1.5


def test_a_model_failure_is_a_502_with_its_message(
    served: Api, deployed: Deployed, canned: Callable[[bytes], None]
) -> None:
    failure = (
        b'{"error":"Failed to process the request(s) for model ' + deployed.triton_name.encode() + b': boom"}'
    )
    canned(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n" % len(failure) + failure)
    response = served.client.post(
        f"/v2/models/{deployed.model}/infer",
        content=BODY,
        headers={"Authorization": f"Bearer {deployed.consumer_key}"},
    )
    assert response.status_code == 502
    assert response.json()["kind"] == "BadGateway"
    assert "boom" in response.json()["error"]
    assert deployed.triton_name not in response.text
