"""The server side of the gRPC data plane: HTTP/2 from stock gRPC clients, unary calls, with limits.

Each connection is one `GrpcServerConnection` on the event loop; a call whose request message is in
is handed to the `CallHandler` (the proxy) from `data_received`, which answers with `reply` or `fail`
from whatever callback it finishes in: no task, future or timer per call. Connection limits, so one
client cannot hold up or starve others: the preface within the header timeout, a header block capped
in bytes (CONTINUATION floods included) and headers in count, a request message capped in bytes
(refused the moment it passes the limit), a call whose message stalls longer than the body timeout
refused, streams per connection capped (calls still answering upstream count, so resetting streams
does not let a client pile work on Triton), more resets than completed calls or floods of empty
frames end the connection, flow-control violations end it, reading stops while the client does not
read, and an idle connection is closed. One lazily re-armed timer per connection.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import hpack

from control_plane.dataplane import h2
from control_plane.dataplane.h2 import ConnectionFailure, H2Connection

MAX_STREAMS = 256  # concurrent calls per connection, answering upstream included
WINDOW = 4 * 1024 * 1024  # receive window per stream and (x4) per connection
RESET_ALLOWANCE = 100  # resets beyond completed calls before the connection is ended
EMPTY_FRAME_ALLOWANCE = 1000
# Control frames (SETTINGS entries, PINGs, PRIORITY, WINDOW_UPDATEs, unknown frames) a connection may send
# beyond CONTROL_PER_CALL per completed call (keepalive and BDP pings, window settings) and 2 per DATA frame
# it was sent (the windows it opens again); past that it is ended. Each frame costs the event loop a
# microsecond or more: floods of 256 KiB cost 15-70 ms each, with no end.
CONTROL_FRAME_ALLOWANCE = 1000
CONTROL_PER_CALL = 10
HARD_CAP_FACTOR = 4  # header blocks up to this many times the limit are read (and refused)
IDLE_S = 300.0  # a connection with no calls this long is closed (grpc's max_connection_idle)
_CONTENT_TYPE = b"application/grpc"
OK_HEADERS = h2.header_block(((b":status", b"200"), (b"content-type", _CONTENT_TYPE)))
OK_TRAILERS = h2.header_block(((b"grpc-status", b"0"),))


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Connection limits, from the settings."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_header_count: int
    max_message_bytes: int
    idle_s: float = IDLE_S


class Failure(Protocol):
    """What a call fails with: a gRPC status code number, a message and maybe a Retry-After."""

    @property
    def number(self) -> int: ...

    @property
    def message(self) -> str: ...

    @property
    def retry_after(self) -> int | None: ...


class CallHandler(Protocol):
    """Screens a call once its headers are in, and serves it once its request message is complete."""

    def screen(self, call: ServerCall) -> Failure | None:
        """What refuses the call before its message is read (answered at once; what it sends is dropped
        unread), or None; it may lower `call.limit`, the most message bytes the call may send."""
        ...

    def on_call(self, connection: GrpcServerConnection, call: ServerCall, message: bytes) -> None: ...


class StatusError(Exception):
    """A call refused by the connection layer itself (size, compression, framing)."""

    def __init__(self, number: int, message: str):
        super().__init__(message)
        self.number, self.message, self.retry_after = number, message, None


RESOURCE_EXHAUSTED, INVALID_ARGUMENT, UNIMPLEMENTED, INTERNAL, DEADLINE_EXCEEDED = 8, 3, 12, 13, 4


class ServerCall:
    """One stream: its headers, message bytes as they come, and whether it was answered."""

    __slots__ = (
        "answered",
        "cancelled",
        "chunks",
        "headers",
        "last_active",
        "limit",
        "on_cancel",
        "path",
        "receiving",
        "recv_unacked",
        "size",
        "started",
        "stream_id",
    )

    def __init__(self, stream_id: int, now: float):
        self.stream_id = stream_id
        self.headers: dict[bytes, bytes] = {}
        self.path = b""
        self.chunks: list[bytes] = []
        self.size = self.recv_unacked = 0
        self.limit = 0  # the most message bytes it may send: the connection's limit, or the handler's
        self.receiving = True
        self.answered = self.cancelled = False
        self.started = time.perf_counter()
        self.last_active = now
        self.on_cancel: Callable[[], None] | None = None  # the proxy's: stop the call upstream

    def timeout_s(self) -> float | None:
        """The client's deadline (grpc-timeout), in seconds from the call's start."""
        value = self.headers.get(b"grpc-timeout")
        if not value or not value[:-1].isdigit():
            return None
        unit = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}.get(value[-1:])
        return int(value[:-1]) * unit if unit is not None else None


def grpc_message(text: str) -> bytes:
    """A grpc-message value: percent-encoded UTF-8, as the gRPC HTTP/2 spec asks."""
    raw = text.encode()[:4096]
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


class GrpcServerConnection(H2Connection):
    """One client connection (see the module docstring)."""

    handler: CallHandler
    limits: ServerLimits

    def __init__(self, handler: CallHandler, limits: ServerLimits, connections: set[GrpcServerConnection]):
        super().__init__()
        self.handler, self.limits, self._connections = handler, limits, connections
        # Blocks up to the hard cap are decoded (HPACK state must stay in step) and refused per call
        # past max_header_bytes; beyond the hard cap the connection ends.
        self._hard_cap = HARD_CAP_FACTOR * limits.max_header_bytes
        self._decoder = h2.CachedDecoder(self._hard_cap)
        self._max_fields = HARD_CAP_FACTOR * limits.max_header_count  # past it, not decoded at all
        self._calls: dict[int, ServerCall] = {}
        self._preface = True  # the client's preface is still due
        self._block: bytearray | None = None  # a header block awaiting CONTINUATION
        self._block_call: ServerCall | None = None
        self._block_end_stream = False
        self._last_stream_id = 0
        self._recv_window = WINDOW * 4
        self._recv_unacked = 0
        self._completed = self._resets = self._empty = self._control = 0
        self._connected = self._last_active = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._goaway = False  # the client said goodbye or we are shutting down: no new calls

    # --- connection ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connections.add(self)
        self._connected = self._last_active = self.loop.time()
        self.send(
            h2.settings_frame(
                (
                    (h2.MAX_CONCURRENT_STREAMS, MAX_STREAMS),
                    (h2.INITIAL_WINDOW_SIZE, WINDOW),
                    (h2.MAX_HEADER_LIST_SIZE, self._hard_cap),
                    (h2.ENABLE_PUSH, 0),
                )
            )
        )
        self.send(h2.window_update(0, WINDOW * 4 - h2.DEFAULT_WINDOW))
        self._arm(self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._preface:
            data = self._rest + data
            self._rest = b""
            if len(data) < len(h2.PREFACE):
                if not h2.PREFACE.startswith(data):
                    self.fail_connection(h2.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                else:
                    self._rest = data
                return
            if not data.startswith(h2.PREFACE):
                self.fail_connection(h2.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                return
            self._preface = False
            data = data[len(h2.PREFACE) :]
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        calls, self._calls = self._calls, {}
        for call in calls.values():
            self._cancel(call)

    def fail_connection(self, code: int, message: str, last_stream_id: int = 0) -> None:
        """GOAWAY naming the last call taken: those up to it may have run, so a client must not send
        them again elsewhere as never processed (RFC 9113, 6.8); then close."""
        super().fail_connection(code, message, last_stream_id or self._last_stream_id)

    def shutdown(self) -> None:
        """Stop taking calls (GOAWAY); close once those in progress are answered."""
        self._goaway = True
        if not self.closed:
            payload = self._last_stream_id.to_bytes(4, "big") + h2.NO_ERROR.to_bytes(4, "big")
            self.send(h2.frame(h2.GOAWAY, 0, 0, payload))
        if not self._calls:
            self._close()

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.loop.call_soon(self.transport.close)  # after the queued frames are written

    # --- frames -------------------------------------------------------------------------------------

    def on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._block is not None and kind != h2.CONTINUATION:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "a header block was interrupted")
        if kind == h2.DATA:
            self._on_data(flags, stream_id, payload)
        elif kind == h2.HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif kind == h2.CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif kind == h2.RST_STREAM:
            self._on_reset(stream_id, payload)
        elif kind == h2.GOAWAY:
            self._goaway = True
            if not self._calls:
                self._close()
        else:
            self._control += max(1, len(payload) // 6) if kind == h2.SETTINGS else 1
            if self._control > CONTROL_FRAME_ALLOWANCE + CONTROL_PER_CALL * self._completed + (
                2 * self.data_frames_sent
            ):
                raise ConnectionFailure(h2.ENHANCE_YOUR_CALM, "too many control frames")
            if kind == h2.SETTINGS and self._last_stream_id == 0 and flags & h2.ACK == 0:
                self._last_active = self.loop.time()
            super().on_frame(kind, flags, stream_id, payload)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        if not stream_id:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "HEADERS on stream 0")
        block = h2.strip_padding(flags, payload, priority=True)
        call = self._calls.get(stream_id)
        if call is None:
            if stream_id % 2 == 0 or stream_id <= self._last_stream_id:
                raise ConnectionFailure(h2.PROTOCOL_ERROR, "a new stream must have a higher odd id")
            self._last_stream_id = stream_id
            call = ServerCall(stream_id, self.loop.time())
        elif not call.receiving:
            raise ConnectionFailure(h2.STREAM_CLOSED, "HEADERS on a half-closed stream")
        self._block = bytearray(block)
        self._block_call, self._block_end_stream = call, bool(flags & h2.END_STREAM)
        self._check_block_size()
        if flags & h2.END_HEADERS:
            self._end_block()
        else:
            self._arm(self.limits.header_timeout_s)

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        call = self._block_call
        if self._block is None or call is None or call.stream_id != stream_id:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "CONTINUATION out of sequence")
        self._block += payload
        self._check_block_size()
        if flags & h2.END_HEADERS:
            self._end_block()

    def _check_block_size(self) -> None:
        assert self._block is not None
        if len(self._block) > self._hard_cap:
            # The block cannot be skipped (HPACK state), so the connection ends.
            raise ConnectionFailure(h2.ENHANCE_YOUR_CALM, "header block over the limit")

    def _end_block(self) -> None:
        block, call, end_stream = self._block, self._block_call, self._block_end_stream
        self._block = self._block_call = None
        assert block is not None and call is not None
        try:
            headers = self._decoder.decode(bytes(block), max_fields=self._max_fields)
        except (hpack.OversizedHeaderListError, h2.TooManyFields):
            raise ConnectionFailure(h2.ENHANCE_YOUR_CALM, "header list over the limit") from None
        except hpack.HPACKError:
            raise ConnectionFailure(h2.COMPRESSION_ERROR, "bad header block") from None
        if call.stream_id in self._calls:  # trailers from the client: only their END_STREAM matters
            if end_stream:
                self._end_stream(call)
            return
        if self._goaway:
            self.send(h2.rst_stream(call.stream_id, h2.REFUSED_STREAM))
            return
        if len(self._calls) >= MAX_STREAMS:
            self.send(h2.rst_stream(call.stream_id, h2.REFUSED_STREAM))
            return
        self._calls[call.stream_id] = call
        self.stream_windows[call.stream_id] = self.peer_initial_window
        self._last_active = self.loop.time()
        size = sum(len(name) + len(value) for name, value in headers)
        if len(headers) > self.limits.max_header_count or size > self.limits.max_header_bytes:
            message = (
                f"request metadata is over the limit of {self.limits.max_header_count} entries or "
                f"{self.limits.max_header_bytes} bytes"
            )
            self._refuse(call, StatusError(RESOURCE_EXHAUSTED, message))
        else:
            call.headers = dict(headers)
            call.path = call.headers.get(b":path", b"")
            call.limit = self.limits.max_message_bytes
            if call.headers.get(b":method") != b"POST" or not call.headers.get(
                b"content-type", b""
            ).startswith(_CONTENT_TYPE):
                self._refuse(
                    call, StatusError(INTERNAL, "not a gRPC request (POST, content-type application/grpc)")
                )
            elif (failure := self.handler.screen(call)) is not None:
                self._refuse(call, failure)
        if end_stream:
            self._end_stream(call)
        else:
            self._arm(self.limits.body_timeout_s)

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        size = len(payload)
        self._recv_window -= size
        if self._recv_window < 0:
            raise ConnectionFailure(h2.FLOW_CONTROL_ERROR, "data beyond the connection window")
        self._recv_unacked += size
        if self._recv_unacked >= WINDOW:
            self.send(h2.window_update(0, self._recv_unacked))
            self._recv_window += self._recv_unacked
            self._recv_unacked = 0
        if not size and not flags & h2.END_STREAM:
            self._empty += 1
            if self._empty > EMPTY_FRAME_ALLOWANCE and self._empty > self._completed:
                raise ConnectionFailure(h2.ENHANCE_YOUR_CALM, "too many empty frames")
        call = self._calls.get(stream_id)
        if call is None:
            if stream_id > self._last_stream_id or not stream_id:
                raise ConnectionFailure(h2.PROTOCOL_ERROR, "DATA on an idle stream")
            return  # a stream we closed or refused: ignored (the connection window is refilled)
        if not call.receiving:
            raise ConnectionFailure(h2.STREAM_CLOSED, "DATA after END_STREAM")
        call.last_active = self.loop.time()
        data = h2.strip_padding(flags, payload)
        if not call.answered:
            call.size += len(data)
            if call.size > call.limit + 5:
                self._refuse(
                    call,
                    StatusError(
                        RESOURCE_EXHAUSTED, f"request message larger than the limit of {call.limit} bytes"
                    ),
                )
                call.chunks.clear()
            else:
                call.chunks.append(data)
        call.recv_unacked += size
        if call.recv_unacked >= WINDOW // 2 and not flags & h2.END_STREAM:
            self.send(h2.window_update(stream_id, call.recv_unacked))
            call.recv_unacked = 0
        if call.recv_unacked > WINDOW:
            raise ConnectionFailure(h2.FLOW_CONTROL_ERROR, "data beyond the stream window")
        if flags & h2.END_STREAM:
            self._end_stream(call)

    def _on_reset(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionFailure(h2.FRAME_SIZE_ERROR, "bad RST_STREAM")
        if not stream_id or stream_id > self._last_stream_id:
            raise ConnectionFailure(h2.PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        self._resets += 1
        if self._resets > RESET_ALLOWANCE and self._resets > self._completed:
            raise ConnectionFailure(h2.ENHANCE_YOUR_CALM, "too many streams reset")
        call = self._calls.get(stream_id)
        self.stream_windows.pop(stream_id, None)
        self.blocked.pop(stream_id, None)
        if call is None:
            return
        call.receiving = False
        if not call.answered:  # still counts against MAX_STREAMS until its upstream call is over
            call.cancelled = True
            self._cancel(call)
        else:
            self._forget(call)

    # --- calls ----------------------------------------------------------------------------------------

    def _end_stream(self, call: ServerCall) -> None:
        call.receiving = False
        if call.answered:  # refused while receiving: its answer is out
            self._forget(call)
            return
        chunks = call.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        call.chunks = []
        try:
            message = self._message(call, body)
        except StatusError as exc:
            self.fail(call, exc)
            return
        self.handler.on_call(self, call, message)

    def _message(self, call: ServerCall, body: bytes) -> bytes:
        """The one request message of a unary call, decompressed if it was sent compressed."""
        if len(body) < 5:
            raise StatusError(INTERNAL, "the request has no complete message")
        length = int.from_bytes(body[1:5], "big")
        if length != len(body) - 5:
            raise StatusError(INTERNAL, "a unary call takes exactly one message")
        message = body[5:]
        if body[0] == 0:
            return message
        encoding = call.headers.get(b"grpc-encoding", b"identity")
        limit = self.limits.max_message_bytes
        if encoding not in (b"gzip", b"deflate"):
            raise StatusError(UNIMPLEMENTED, f"message compression {encoding.decode(errors='replace')!r}")
        try:
            inflater = zlib.decompressobj(31 if encoding == b"gzip" else 15)
            plain = inflater.decompress(message, limit + 1)
        except zlib.error:
            raise StatusError(INTERNAL, "the compressed message could not be decompressed") from None
        if len(plain) > limit or inflater.unconsumed_tail:
            raise StatusError(
                RESOURCE_EXHAUSTED, f"decompressed message larger than the limit of {limit} bytes"
            )
        return plain

    def _settles(self, call: ServerCall) -> bool:
        """Whether to send `call`'s answer now: not if it was answered before or the connection is closed;
        otherwise it counts as completed, and a call its client cancelled is only forgotten."""
        if call.answered or self.closed:
            return False
        call.answered = True
        self._completed += 1
        if call.cancelled:
            self._forget(call)
            return False
        return True

    def reply(self, call: ServerCall, message: bytes, timing: bytes = b"") -> None:
        """Answer OK with one response message; `timing`, if any, as the `server-timing` trailer."""
        if not self._settles(call):
            return
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        trailers = OK_TRAILERS + h2.literal(b"server-timing", timing) if timing else OK_TRAILERS
        self.send_message(call.stream_id, OK_HEADERS, data, trailers)

    def fail(self, call: ServerCall, failure: Failure, timing: bytes = b"") -> None:
        """Answer with a gRPC status (a trailers-only response); `timing` as in `reply`."""
        if not self._settles(call):
            return
        headers = [
            (b":status", b"200"),
            (b"content-type", _CONTENT_TYPE),
            (b"grpc-status", b"%d" % failure.number),
            (b"grpc-message", grpc_message(failure.message)),
        ]
        if failure.retry_after is not None:
            headers.append((b"retry-after", b"%d" % failure.retry_after))
        if timing:
            headers.append((b"server-timing", timing))
        self.send(
            h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, call.stream_id, h2.header_block(headers))
        )
        self.sent_all(call.stream_id)

    def _refuse(self, call: ServerCall, failure: Failure) -> None:
        """Refuse a call still receiving: answer now, drop whatever else it sends."""
        self.fail(call, failure)
        if call.receiving:
            self.send(h2.rst_stream(call.stream_id, h2.NO_ERROR))
            call.receiving = False
            self._forget(call)

    def sent_all(self, stream_id: int) -> None:
        super().sent_all(stream_id)
        call = self._calls.get(stream_id)
        if call is not None and not call.receiving:
            self._forget(call)

    def _forget(self, call: ServerCall) -> None:
        self._calls.pop(call.stream_id, None)
        self.stream_windows.pop(call.stream_id, None)
        self.blocked.pop(call.stream_id, None)
        self._last_active = self.loop.time()
        if self._goaway and not self._calls:
            self._close()

    def _cancel(self, call: ServerCall) -> None:
        """The client is gone or reset the call: stop it upstream; forget it once it is answered."""
        call.cancelled = True
        if call.answered:
            self._forget(call)
            return
        cancel, call.on_cancel = call.on_cancel, None
        if cancel is not None:
            cancel()

    # --- the connection's one timer -------------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= self.loop.time() + delay:
                return
            timer.cancel()
        self._timer = self.loop.call_later(max(delay, 0.01), self._check_timeouts)

    def _check_timeouts(self) -> None:
        self._timer = None
        if self.closed:
            return
        limits, now = self.limits, self.loop.time()
        if self._preface or (self._last_stream_id == 0 and now - self._connected < limits.header_timeout_s):
            if self._preface and now - self._connected >= limits.header_timeout_s:
                self.fail_connection(h2.PROTOCOL_ERROR, "no connection preface in time")
                return
            self._arm(self._connected + limits.header_timeout_s - now)
            return
        if self._block_call is not None and now - self._block_call.last_active >= limits.header_timeout_s:
            self.fail_connection(h2.PROTOCOL_ERROR, "a header block did not complete in time")
            return
        wait = limits.idle_s
        for call in list(self._calls.values()):
            if call.receiving and not call.answered:
                left = call.last_active + limits.body_timeout_s - now
                if left <= 0:
                    message = f"the request message stalled for over {limits.body_timeout_s:g}s"
                    self._refuse(call, StatusError(DEADLINE_EXCEEDED, message))
                else:
                    wait = min(wait, left)
        if not self._calls:
            left = self._last_active + limits.idle_s - now
            if left <= 0:
                self.shutdown()
                return
            wait = min(wait, left)
        self._arm(wait)
