"""Hostile HTTP/2 against the gRPC data plane's own HTTP/2 server: every attack is bounded (the
connection is refused or ended within a second or two, never a hang), and a well-behaved client on
another connection is served meanwhile and after."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import hpack
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from tritonclient.grpc import service_pb2 as pb

from control_plane.dataplane import h2
from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.procs import free_port

INFER = b"/inference.GRPCInferenceService/ModelInfer"
X = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)


@pytest.fixture
def setup(make_api: Callable[..., Api], triton: RunningTriton, tmp_path: Path) -> tuple[Api, Deployed]:
    api = make_api(grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url], header_timeout_s=1.0)
    return api, deploy_onnx(api, tmp_path)


def served(api: Api, d: Deployed) -> None:
    """A stock client on its own connection gets its answer, promptly."""
    started = time.monotonic()
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{api.settings.grpc_port}") as client:
        tensor = triton_grpc.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer(
            d.model, [tensor], headers={"authorization": f"Bearer {d.consumer_key}"}, client_timeout=5
        )
    assert result.as_numpy("y").shape == (1, 3)
    assert time.monotonic() - started < 3


def inferences(triton: RunningTriton, d: Deployed) -> int:
    """How many requests Triton has run for the version."""
    stats = httpx.get(f"{triton.process.http_url}/v2/models/{d.triton_name}/stats", timeout=10).json()
    return int(stats["model_stats"][0]["inference_count"])


def message(model: str) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(X.tobytes())
    data = request.SerializeToString()
    return b"\x00" + len(data).to_bytes(4, "big") + data


class Raw:
    """A hand-driven HTTP/2 connection."""

    def __init__(self, port: int, *, settings: tuple[tuple[int, int], ...] = ()):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.encoder = hpack.Encoder()
        self.buf = b""
        self.sock.sendall(h2.PREFACE + h2.settings_frame(settings))

    def headers(self, stream_id: int, key: str, *, end_stream: bool = False, path: bytes = INFER) -> bytes:
        block = self.encoder.encode(
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path.decode()),
                (":authority", "x"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("authorization", f"Bearer {key}"),
            ]
        )
        flags = h2.END_HEADERS | (h2.END_STREAM if end_stream else 0)
        return h2.frame(h2.HEADERS, flags, stream_id, block)

    def send(self, data: bytes) -> bool:
        """Send; False once the server has closed the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def frames(
        self, *, until: Callable[[list[tuple[int, int, int, bytes]]], bool], within: float = 3.0
    ) -> Any:
        """Frames read until `until(frames)` holds or the connection closes; (frames, closed)."""
        found: list[tuple[int, int, int, bytes]] = []
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            while len(self.buf) >= 9 and len(self.buf) >= 9 + (int.from_bytes(self.buf[:3], "big")):
                length = int.from_bytes(self.buf[:3], "big")
                kind, flags = self.buf[3], self.buf[4]
                sid = int.from_bytes(self.buf[5:9], "big")
                found.append((kind, flags, sid, self.buf[9 : 9 + length]))
                self.buf = self.buf[9 + length :]
            if until(found):
                return found, False
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                return found, True
            if not chunk:
                return found, True
            self.buf += chunk
        return found, False

    def close(self) -> None:
        self.sock.close()


def goaway_code(frames: list[tuple[int, int, int, bytes]]) -> int | None:
    codes = [int.from_bytes(p[4:8], "big") for kind, _, _, p in frames if kind == h2.GOAWAY]
    return codes[0] if codes else None


def goaway_last_stream(frames: list[tuple[int, int, int, bytes]]) -> int:
    return next(int.from_bytes(p[:4], "big") & 0x7FFFFFFF for kind, _, _, p in frames if kind == h2.GOAWAY)


@pytest.fixture
def raw(setup: tuple[Api, Deployed]) -> Iterator[Callable[..., Raw]]:
    opened: list[Raw] = []

    def open_(**kwargs: Any) -> Raw:
        connection = Raw(setup[0].settings.grpc_port, **kwargs)
        opened.append(connection)
        return connection

    yield open_
    for connection in opened:
        connection.close()


def test_a_bad_preface_is_refused_at_once(setup: tuple[Api, Deployed]) -> None:
    api, d = setup
    with socket.create_connection(("127.0.0.1", api.settings.grpc_port), timeout=5) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert time.monotonic() - started < 1
    assert b"not an HTTP/2 connection preface" in data  # in a GOAWAY, then closed
    served(api, d)


def test_a_continuation_flood_ends_the_connection(
    setup: tuple[Api, Deployed], raw: Callable[..., Raw]
) -> None:
    api, d = setup
    attacker = raw()
    attacker.send(h2.frame(h2.HEADERS, 0, 1, b"\x00\x01a\x01b"))  # no END_HEADERS
    sent = 0
    while sent < 8 * 1024 * 1024 and attacker.send(h2.frame(h2.CONTINUATION, 0, 1, b"\x00" * 16384)):
        sent += 16384
    frames, _ = attacker.frames(until=lambda f: goaway_code(f) is not None)
    assert goaway_code(frames) == h2.ENHANCE_YOUR_CALM
    assert sent < 8 * 1024 * 1024  # closed long before the flood was through
    served(api, d)


def test_oversized_frames_and_window_abuse_end_the_connection(
    setup: tuple[Api, Deployed], raw: Callable[..., Raw]
) -> None:
    api, d = setup
    cases = [
        ((1 << 20).to_bytes(3, "big") + bytes((h2.DATA, 0)) + (1).to_bytes(4, "big"), h2.FRAME_SIZE_ERROR),
        (h2.window_update(0, 2**31 - 1), h2.FLOW_CONTROL_ERROR),  # window over 2^31-1
        (h2.window_update(0, 0), h2.PROTOCOL_ERROR),
        (h2.frame(h2.PING, 0, 0, b"short"), h2.FRAME_SIZE_ERROR),
        (h2.frame(h2.DATA, 0, 7, b"data on a stream never opened"), h2.PROTOCOL_ERROR),
    ]
    for data, code in cases:
        attacker = raw()
        attacker.send(data)
        frames, _ = attacker.frames(until=lambda f: goaway_code(f) is not None)
        assert goaway_code(frames) == code, data[:16]
    served(api, d)


def test_a_client_that_does_not_read_holds_up_only_itself(
    setup: tuple[Api, Deployed], raw: Callable[..., Raw]
) -> None:
    api, d = setup
    stalled = raw(settings=((h2.INITIAL_WINDOW_SIZE, 0),))  # grants no room for answers
    stalled.send(stalled.headers(1, d.consumer_key) + h2.frame(h2.DATA, h2.END_STREAM, 1, message(d.model)))
    frames, closed = stalled.frames(until=lambda f: any(k == h2.DATA for k, *_ in f), within=1.0)
    assert not closed and not any(kind == h2.DATA for kind, *_ in frames)  # the answer waits for room
    served(api, d)  # meanwhile, others are answered
    stalled.send(h2.window_update(1, 1 << 20))
    frames, _ = stalled.frames(until=lambda f: any(k == h2.HEADERS and fl & h2.END_STREAM for k, fl, *_ in f))
    trailers = [p for kind, flags, _, p in frames if kind == h2.HEADERS and flags & h2.END_STREAM]
    assert trailers and (b"grpc-status", b"0") in list(hpack.Decoder().decode(trailers[-1], raw=True))


def test_a_reset_flood_ends_the_connection_and_bounds_triton_work(
    setup: tuple[Api, Deployed], raw: Callable[..., Raw], triton: RunningTriton
) -> None:
    api, d = setup
    before = inferences(triton, d)
    attacker = raw()
    body = message(d.model)
    for stream_id in range(1, 4001, 2):  # open a call and reset it at once (CVE-2023-44487)
        frames = attacker.headers(stream_id, d.consumer_key) + h2.frame(
            h2.DATA, h2.END_STREAM, stream_id, body
        )
        if not attacker.send(frames + h2.rst_stream(stream_id, h2.CANCEL)):
            break
    frames, _ = attacker.frames(until=lambda f: goaway_code(f) is not None)
    assert goaway_code(frames) == h2.ENHANCE_YOUR_CALM
    # The calls it took may have run: the GOAWAY names the last, so a client does not send them again
    # as never processed (it said 0).
    last = goaway_last_stream(frames)
    assert last % 2 == 1 and 201 <= last <= stream_id, last
    served(api, d)
    assert inferences(triton, d) - before <= 100 + 256 + 1  # the allowance, the stream cap, `served`


def test_unserved_methods_and_compressed_calls(setup: tuple[Api, Deployed]) -> None:
    api, d = setup
    metadata = (("authorization", f"Bearer {d.consumer_key}"),)
    with grpc.insecure_channel(f"127.0.0.1:{api.settings.grpc_port}") as channel:
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as caught:
            list(stream(iter([message(d.model)[5:]]), metadata=metadata, timeout=5))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        infer = channel.unary_unary(INFER.decode(), response_deserializer=pb.ModelInferResponse.FromString)
        answer = infer(message(d.model)[5:], metadata=metadata, timeout=5, compression=grpc.Compression.Gzip)
    assert answer.model_name == d.model and len(answer.raw_output_contents[0]) == 12


@pytest.mark.parametrize(
    "flood",
    [
        h2.frame(h2.SETTINGS, 0, 0),  # empty SETTINGS: each asks for an ACK
        h2.frame(h2.PING, 0, 0, b"\0" * 8),  # each asks for a PING ACK
        h2.window_update(0, 1),
        h2.frame(h2.PRIORITY, 0, 1, b"\0" * 5),
        h2.frame(0x2A, 0, 0, b""),  # an unknown type, ignored by the protocol
    ],
    ids=["settings", "ping", "window-update", "priority", "unknown"],
)
def test_a_control_frame_flood_ends_the_connection(
    setup: tuple[Api, Deployed], raw: Callable[..., Raw], flood: bytes
) -> None:
    """Floods of frames that ask nothing of a call cost the event loop a microsecond or more each, with
    no end (256 KiB of empty SETTINGS: 71 ms, PINGs 31 ms, per read): past an allowance the connection
    is ended."""
    api, d = setup
    attacker = raw()
    sent = 0
    while sent < 4 << 20 and attacker.send(flood * 4096):
        sent += len(flood) * 4096
    frames, _ = attacker.frames(until=lambda f: goaway_code(f) is not None)
    assert goaway_code(frames) == h2.ENHANCE_YOUR_CALM
    served(api, d)


def test_one_settings_frame_moves_the_open_streams_windows_once(
    setup: tuple[Api, Deployed], raw: Callable[..., Raw]
) -> None:
    """A SETTINGS frame of thousands of INITIAL_WINDOW_SIZE entries, with 256 streams open, moved every
    stream's window once per entry (0.5 s a frame); now it is ended, and a legitimate change of the
    window still applies to a stream waiting for room."""
    api, d = setup
    attacker = raw()
    for stream_id in range(1, 513, 2):
        attacker.send(attacker.headers(stream_id, d.consumer_key))  # open, no message yet
    entries = b"".join(
        h2.INITIAL_WINDOW_SIZE.to_bytes(2, "big") + (65535 + i % 2).to_bytes(4, "big") for i in range(2730)
    )
    attacker.send(h2.frame(h2.SETTINGS, 0, 0, entries))
    frames, _ = attacker.frames(until=lambda f: goaway_code(f) is not None)
    assert goaway_code(frames) == h2.ENHANCE_YOUR_CALM
    stalled = raw(settings=((h2.INITIAL_WINDOW_SIZE, 0),))  # grants no room for answers
    stalled.send(stalled.headers(1, d.consumer_key) + h2.frame(h2.DATA, h2.END_STREAM, 1, message(d.model)))
    frames, _ = stalled.frames(until=lambda f: any(k == h2.DATA for k, *_ in f), within=1.0)
    assert not any(kind == h2.DATA for kind, *_ in frames)
    stalled.send(h2.settings_frame(((h2.INITIAL_WINDOW_SIZE, 1 << 20),)))  # room, by SETTINGS this time
    frames, _ = stalled.frames(until=lambda f: any(k == h2.HEADERS and fl & h2.END_STREAM for k, fl, *_ in f))
    trailers = [p for kind, flags, _, p in frames if kind == h2.HEADERS and flags & h2.END_STREAM]
    assert trailers and (b"grpc-status", b"0") in list(hpack.Decoder().decode(trailers[-1], raw=True))
    served(api, d)


def test_a_header_block_of_thousands_of_fields_is_not_decoded(
    setup: tuple[Api, Deployed], raw: Callable[..., Raw]
) -> None:
    """7800 tiny literals fit 31 KiB, under the block's byte cap: hpack decoded them all (22-62 ms) before
    the count was checked, call after call on one connection. Past 4x the count limit the block is
    refused undecoded and the connection ended (its HPACK state is unknown then)."""
    api, d = setup
    attacker = raw()
    block = b"\x00\x01a\x00" * 4000  # literal without indexing, new name "a", empty value: 16 KB
    attacker.send(h2.frame(h2.HEADERS, h2.END_HEADERS, 1, block))
    frames, _ = attacker.frames(until=lambda f: goaway_code(f) is not None)
    assert goaway_code(frames) == h2.ENHANCE_YOUR_CALM
    served(api, d)


def test_metadata_over_the_count_limit_is_refused_per_call(setup: tuple[Api, Deployed]) -> None:
    """Between the count limit and 4x it, the call is refused and the connection goes on."""
    api, d = setup
    many = [(f"x-h{i}", "v") for i in range(150)]
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{api.settings.grpc_port}") as client:
        with pytest.raises(triton_grpc.InferenceServerException) as refused:
            client.is_model_ready(
                d.model, headers={"authorization": f"Bearer {d.consumer_key}", **dict(many)}
            )
        assert "RESOURCE_EXHAUSTED" in str(refused.value.status())
        assert client.is_model_ready(d.model, headers={"authorization": f"Bearer {d.consumer_key}"})


SERVICE = "/inference.GRPCInferenceService/"


@pytest.mark.parametrize(
    ("path", "key", "status", "sent"),
    [
        (INFER, "not-a-key", "16", 0),  # UNAUTHENTICATED
        (INFER, "cp_0123456789ab_nothing", "16", 3 * 16384),
        (f"{SERVICE}ModelStreamInfer".encode(), "consumer", "12", 16384),  # UNIMPLEMENTED
        (f"{SERVICE}ServerLive".encode(), "none", "8", 5 * 16384),  # RESOURCE_EXHAUSTED: over 64 KiB
    ],
)
def test_a_call_its_headers_refuse_is_answered_without_waiting_for_its_message(
    setup: tuple[Api, Deployed], path: bytes, key: str, status: str, sent: int
) -> None:
    """Before: a ModelInfer with no valid key was only refused once its whole message was in, so 24
    streams of 7 MiB each, sent without any key and never ended, held 171 MiB of the server's memory (up
    to CP_GRPC_MAX_MESSAGE_BYTES per stream, 256 streams per connection); a stock client's
    ModelStreamInfer waited 30 s for the stall timeout (DEADLINE_EXCEEDED) instead of UNIMPLEMENTED; and
    ServerLive, which needs no key, took up to 64 MiB before the 64 KiB limit of such calls refused it."""
    api, d = setup
    raw = Raw(api.settings.grpc_port)
    assert raw.send(raw.headers(1, d.consumer_key if key == "consumer" else key, path=path))
    for _ in range(sent // 16384):  # never END_STREAM
        raw.send(h2.frame(h2.DATA, 0, 1, b"\x00" * 16384))

    def answered(frames: list[tuple[int, int, int, bytes]]) -> bool:
        return any(kind == h2.HEADERS and sid == 1 for kind, _, sid, _ in frames)

    frames, _ = raw.frames(until=answered, within=3)
    [block] = [payload for kind, _, sid, payload in frames if kind == h2.HEADERS and sid == 1]
    headers = {name.decode(): value.decode() for name, value in hpack.Decoder().decode(block, raw=True)}
    assert headers["grpc-status"] == status, headers
    raw.sock.close()
    served(api, d)
