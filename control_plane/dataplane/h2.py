"""A minimal HTTP/2 connection (RFC 9113) for the gRPC data plane: frames, settings, flow control.

Both ends of the gRPC pass-through build on `H2Connection`: the server side that stock gRPC clients
talk to (`grpc_server.py`) and the client side that talks to Triton (`h2client.py`). Only what unary
gRPC needs: no server push, no priorities (accepted and ignored). Header blocks we send are HPACK
literals without indexing (no dynamic-table state to keep in step); blocks we receive are decoded
with the `hpack` package. Outgoing frames are gathered and written once per event-loop iteration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
END_STREAM = ACK = 0x1
END_HEADERS, PADDED, PRIORITY_FLAG = 0x4, 0x8, 0x20
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE = 1, 2, 3, 4
MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 5, 6
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0, 1, 2, 3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 5, 6, 7, 8, 9
ENHANCE_YOUR_CALM = 11

DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
FRAME_LIMIT = 16384  # the largest frame we accept (the protocol's default; we never raise it)


class ConnectionFailure(Exception):
    """A connection error: the connection is ended with GOAWAY and this code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One frame on the wire."""
    return (
        (len(payload) << 8 | kind).to_bytes(4, "big")
        + bytes((flags,))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def settings_frame(values: Iterable[tuple[int, int]]) -> bytes:
    """A SETTINGS frame with these (identifier, value) pairs."""
    payload = b"".join(ident.to_bytes(2, "big") + value.to_bytes(4, "big") for ident, value in values)
    return frame(SETTINGS, 0, 0, payload)


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame."""
    return frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big"))


def rst_stream(stream_id: int, code: int) -> bytes:
    """An RST_STREAM frame."""
    return frame(RST_STREAM, 0, stream_id, code.to_bytes(4, "big"))


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def literal(name: bytes, value: bytes) -> bytes:
    """An HPACK "literal header field without indexing, new name" (no Huffman, no table change)."""
    return b"\x00" + _hpack_int(len(name), 7, 0) + name + _hpack_int(len(value), 7, 0) + value


def header_block(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """A header block of literals (`:status 200` as its static-table index)."""
    return b"".join(b"\x88" if (n, v) == (b":status", b"200") else literal(n, v) for n, v in headers)


class Outgoing:
    """What a stream still has to send: data (flow-controlled) and then a trailing header block."""

    __slots__ = ("data", "offset", "trailers")

    def __init__(self, data: bytes, trailers: bytes | None):
        self.data, self.offset, self.trailers = data, 0, trailers


class H2Connection(asyncio.Protocol):
    """Frame parsing, SETTINGS/PING/WINDOW_UPDATE handling, and flow-controlled sending."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_event_loop()
        self._rest = b""
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self.closed = False
        self.peer_window = DEFAULT_WINDOW  # connection-level send window
        self.peer_initial_window = DEFAULT_WINDOW  # for new streams' send windows
        self.peer_max_frame = 16384
        self.peer_max_streams = MAX_WINDOW
        self.stream_windows: dict[int, int] = {}  # send windows of open streams
        self.blocked: dict[int, Outgoing] = {}  # streams waiting for window to send the rest
        self.data_frames_sent = 0  # what a peer's WINDOW_UPDATEs answer
        self.write_paused = False

    # --- asyncio.Protocol -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pause_writing(self) -> None:
        """The peer does not read: stop reading from it too (bounds what we buffer for it)."""
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._rest:
            data = self._rest + data
        pos, end = 0, len(data)
        try:
            while end - pos >= 9:
                head = int.from_bytes(data[pos : pos + 4], "big")
                length = head >> 8
                if length > FRAME_LIMIT:
                    raise ConnectionFailure(FRAME_SIZE_ERROR, "frame larger than the maximum frame size")
                stop = pos + 9 + length
                if stop > end:
                    break
                flags = data[pos + 4]
                stream_id = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
                self.on_frame(head & 0xFF, flags, stream_id, data[pos + 9 : stop])
                pos = stop
                if self.closed:
                    return
        except ConnectionFailure as failure:
            self.fail_connection(failure.code, str(failure))
            return
        self._rest = data[pos:] if pos < end else b""

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    # --- frames -----------------------------------------------------------------------------------

    def on_frame(self, kind: int, flags: int, stream_id: int, payload: bytes) -> None:
        """Handle one frame (the subclass handles HEADERS, DATA, CONTINUATION, RST_STREAM, GOAWAY)."""
        if kind == SETTINGS:
            self._on_settings(flags, stream_id, payload)
        elif kind == WINDOW_UPDATE:
            self._on_window_update(stream_id, payload)
        elif kind == PING:
            if len(payload) != 8 or stream_id:
                raise ConnectionFailure(FRAME_SIZE_ERROR if len(payload) != 8 else PROTOCOL_ERROR, "bad PING")
            if not flags & ACK:
                self.send(frame(PING, ACK, 0, payload))
        elif kind == PRIORITY:
            if len(payload) != 5 or not stream_id:
                raise ConnectionFailure(PROTOCOL_ERROR, "bad PRIORITY")
        elif kind == PUSH_PROMISE:
            raise ConnectionFailure(PROTOCOL_ERROR, "PUSH_PROMISE is not accepted")
        # unknown frame types are ignored, as RFC 9113 requires

    def _on_settings(self, flags: int, stream_id: int, payload: bytes) -> None:
        if stream_id:
            raise ConnectionFailure(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "SETTINGS of a bad length")
        initial_window = self.peer_initial_window
        for at in range(0, len(payload), 6):
            ident = int.from_bytes(payload[at : at + 2], "big")
            value = int.from_bytes(payload[at + 2 : at + 6], "big")
            if ident == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionFailure(FLOW_CONTROL_ERROR, "initial window too large")
                initial_window = value
            elif ident == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise ConnectionFailure(PROTOCOL_ERROR, "bad MAX_FRAME_SIZE")
                self.peer_max_frame = value
            elif ident == MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif ident == ENABLE_PUSH and value > 1:
                raise ConnectionFailure(PROTOCOL_ERROR, "bad ENABLE_PUSH")
        # The streams' windows move once, by the frame's last INITIAL_WINDOW_SIZE: per entry, a frame of
        # 2730 entries with 256 streams open took 0.5 s.
        delta, self.peer_initial_window = initial_window - self.peer_initial_window, initial_window
        if delta:
            for sid, window in self.stream_windows.items():
                if window + delta > MAX_WINDOW:
                    raise ConnectionFailure(FLOW_CONTROL_ERROR, "a stream window over 2^31-1")
                self.stream_windows[sid] = window + delta
        self.send(frame(SETTINGS, ACK, 0))
        self.pump_blocked()

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ConnectionFailure(FRAME_SIZE_ERROR, "bad WINDOW_UPDATE")
        increment = int.from_bytes(payload, "big") & 0x7FFFFFFF
        if not stream_id:
            if not increment:
                raise ConnectionFailure(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.peer_window += increment
            if self.peer_window > MAX_WINDOW:
                raise ConnectionFailure(FLOW_CONTROL_ERROR, "connection window over 2^31-1")
            self.pump_blocked()
            return
        window = self.stream_windows.get(stream_id)
        if window is None:
            return  # a stream that is closed (or idle): nothing to send on it
        if not increment or window + increment > MAX_WINDOW:
            self.reset_stream(stream_id, PROTOCOL_ERROR if not increment else FLOW_CONTROL_ERROR)
            return
        self.stream_windows[stream_id] = window + increment
        pending = self.blocked.get(stream_id)
        if pending is not None:
            self.pump(stream_id, pending)

    def reset_stream(self, stream_id: int, code: int) -> None:
        """Stream error: RST_STREAM it (the subclass forgets its state)."""
        self.send(rst_stream(stream_id, code))
        self.stream_windows.pop(stream_id, None)
        self.blocked.pop(stream_id, None)

    # --- sending ----------------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes; everything queued in one loop iteration goes out in one write."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def send_message(self, stream_id: int, headers: bytes, data: bytes, trailers: bytes | None) -> None:
        """HEADERS, then DATA (flow-controlled; END_STREAM on it when there are no trailers), then the
        trailing HEADERS with END_STREAM."""
        self.send(frame(HEADERS, END_HEADERS, stream_id, headers))
        self.pump(stream_id, Outgoing(data, trailers))

    def pump(self, stream_id: int, out: Outgoing) -> None:
        """Send as much of a stream's data as the windows allow; the trailers once it is all out."""
        data = out.data
        remaining = len(data) - out.offset
        window = self.stream_windows.get(stream_id, 0)
        while remaining > 0:
            size = min(remaining, window, self.peer_window, self.peer_max_frame)
            if size <= 0:
                self.blocked[stream_id] = out
                self.stream_windows[stream_id] = window
                return
            last = size == remaining and out.trailers is None
            chunk = data if size == len(data) else data[out.offset : out.offset + size]
            self.send(frame(DATA, END_STREAM if last else 0, stream_id, chunk))
            self.data_frames_sent += 1
            out.offset += size
            remaining -= size
            window -= size
            self.peer_window -= size
        self.blocked.pop(stream_id, None)
        if stream_id in self.stream_windows:
            self.stream_windows[stream_id] = window
        if out.trailers is not None:
            self.send(frame(HEADERS, END_HEADERS | END_STREAM, stream_id, out.trailers))
        elif not data:
            self.send(frame(DATA, END_STREAM, stream_id))
        self.sent_all(stream_id)

    def pump_blocked(self) -> None:
        """Windows grew: send what waited for them."""
        for stream_id, out in list(self.blocked.items()):
            if self.peer_window <= 0:
                return
            self.pump(stream_id, out)

    def sent_all(self, stream_id: int) -> None:
        """A stream's last frame is queued (the subclass may forget the stream)."""
        self.stream_windows.pop(stream_id, None)

    def fail_connection(self, code: int, message: str, last_stream_id: int = 0) -> None:
        """GOAWAY with `code`, then close."""
        if self.closed:
            return
        debug = message.encode()[:200]
        self.send(frame(GOAWAY, 0, 0, last_stream_id.to_bytes(4, "big") + code.to_bytes(4, "big") + debug))
        self._flush()
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def strip_padding(flags: int, payload: bytes, *, priority: bool = False) -> bytes:
    """A HEADERS or DATA payload without its padding (and HEADERS' priority fields)."""
    start, end = 0, len(payload)
    if flags & PADDED:
        if not payload:
            raise ConnectionFailure(PROTOCOL_ERROR, "padded frame without a pad length")
        start, end = 1, end - payload[0]
    if priority and flags & PRIORITY_FLAG:
        start += 5
    if end < start:
        raise ConnectionFailure(PROTOCOL_ERROR, "padding longer than the frame")
    return payload if (start, end) == (0, len(payload)) else payload[start:end]


class CachedDecoder:
    """hpack's Decoder, with the answers for repeated header blocks that leave the table alone cached.

    Clients send the same block for call after call (indexed fields and literals without indexing);
    decoding it (Huffman included) in Python was a tenth of the proxy's CPU. A block that adds to the
    dynamic table or resizes it is always decoded, and empties the cache: the other blocks' indexes
    may point elsewhere now.
    """

    def __init__(self, max_header_list_size: int | None = None, *, size: int = 64):
        self._decoder = hpack.Decoder()
        if max_header_list_size is not None:
            self._decoder.max_header_list_size = max_header_list_size
        self._cache: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._size = size

    def decode(self, block: bytes, *, max_fields: int | None = None) -> list[tuple[bytes, bytes]]:
        """The (name, value) pairs of a header block (raw bytes); hpack's errors pass through, and
        TooManyFields, before anything is decoded, for a block of more than `max_fields` fields (each
        costs hpack several microseconds: 7800 tiny literals in 31 KiB took 22-62 ms)."""
        cached = self._cache.get(block)
        if cached is not None:
            return cached
        fields, changes_table = _walk(block)
        if max_fields is not None and fields > max_fields:
            raise TooManyFields(f"a header block of more than {max_fields} fields")
        headers = [(bytes(n), bytes(v)) for n, v in self._decoder.decode(block, raw=True)]
        if changes_table:
            self._cache.clear()
        elif len(self._cache) < self._size:
            self._cache[block] = headers
        return headers


class TooManyFields(Exception):
    """A header block with more fields than its reader takes (the HPACK state is then unknown)."""


def _walk(block: bytes) -> tuple[int, bool]:
    """How many fields a header block holds (walked, not decoded), and whether it inserts into or
    resizes the dynamic table (or cannot be walked: then it is left to the decoder to refuse)."""
    pos, end, fields, changes = 0, len(block), 0, False
    try:
        while pos < end:
            fields += 1
            first = block[pos]
            if first & 0x80:  # indexed field
                _, pos = _int(block, pos, 7)
            elif first & 0xE0 == 0x20:  # dynamic table size update
                changes = True
                fields -= 1
                _, pos = _int(block, pos, 5)
            else:  # literal: with incremental indexing (6-bit index), without or never indexed (4-bit)
                indexing = first & 0xC0 == 0x40
                changes = changes or indexing
                index, pos = _int(block, pos, 6 if indexing else 4)
                if index == 0:
                    pos = _skip_string(block, pos)
                pos = _skip_string(block, pos)
    except IndexError:
        return fields, True
    return fields, changes or pos != end


def _int(block: bytes, pos: int, bits: int) -> tuple[int, int]:
    limit = (1 << bits) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        byte = block[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _skip_string(block: bytes, pos: int) -> int:
    length, pos = _int(block, pos, 7)
    if pos + length > len(block):
        raise IndexError("string past the block")
    return pos + length
