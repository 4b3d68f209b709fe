"""Connection-level limits on uvicorn's httptools protocol, so one client cannot hold others up.

uvicorn itself waits forever for headers and bodies, accepts any header size, reads an over-limit
body to the end, and keeps writing to a client that does not read. Here, per connection and with one
lazily re-armed timer (never one per request): headers must arrive within `header_timeout_s` of a
request's first byte, a body may pause at most `body_timeout_s`, headers are capped in bytes and
count, a Content-Length over the path's limit is refused before its body is read, a streamed body
is refused the moment it passes the limit, and reading stops while the client is not reading
answers. Refusals are JSON errors with `Connection: close`.

A request answered before its body is in (a refusal, or an app that answers without reading, such as a
404 for an unknown model) must not end in a reset: closing a socket with unread data makes the kernel
send RST, and the client may then lose the answer itself (httpx: "Connection reset by peer"). The rest
of a small body is read past and the connection kept; otherwise the close lingers, as nginx's
`lingering_close` does: our side is shut for writing, what still arrives is dropped, and the socket
closes when the client closes or after `LINGER_S`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

from control_plane.dataplane.exchange import error_reply
from control_plane.errors import AppError, PayloadTooLarge
from control_plane.state import AppState

DRAIN_LIMIT = 64 * 1024  # the rest of a body answered early, up to this size, is read past
LINGER_S = 2.0  # how long a closing connection keeps dropping what the client still sends
UPLOAD_PATH = re.compile(rb"^/v1/tenants/[^/]+/models/[^/]+/versions/?(\?|$)")


class _ObservedFlow(FlowControl):
    """uvicorn's flow control, telling the protocol when reading resumes."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedProtocol):
        super().__init__(transport)
        self._protocol = protocol

    def resume_reading(self) -> None:
        """Resume, restarting the client's clocks."""
        if self.read_paused:
            self._protocol.reading_resumed()
        super().resume_reading()


class RequestTimeout(AppError):
    status_code = 408
    kind = "RequestTimeout"


class HeadersTooLarge(AppError):
    status_code = 431
    kind = "RequestHeaderFieldsTooLarge"


class Refusal(Exception):
    """Raised from a parser callback to stop reading; the connection answers it and closes."""

    def __init__(self, error: AppError):
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The limits, read once from the settings."""

    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int
    max_header_count: int
    body_limit: int
    upload_limit: int

    @classmethod
    def of(cls, state: AppState) -> ConnectionLimits:
        """The limits in a process's settings."""
        s = state.settings
        return cls(
            header_timeout_s=s.header_timeout_s,
            body_timeout_s=s.body_timeout_s,
            max_header_bytes=s.max_header_bytes,
            max_header_count=s.max_header_count,
            body_limit=s.max_request_bytes,
            upload_limit=s.max_upload_bytes,
        )


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with timeouts, header and body limits, and write backpressure."""

    bound_app: FastAPI
    bound_state: AppState | None = None  # the app's state once its lifespan has started
    bound_limits: ConnectionLimits | None = None
    _lim: ConnectionLimits  # this connection's, set when it is made

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._receiving = False  # between a request's first byte and its last
        self._headers_done = False
        self._request_started = self._last_active = 0.0
        self._header_bytes = self._header_count = self._body_bytes = 0
        self._body_limit = 0
        self._refusal: Refusal | None = None
        self._declared: bytes | None = None  # the request's Content-Length
        self._timer: asyncio.TimerHandle | None = None
        self._reading_held = False  # reading paused until the client takes its answers
        self._lingering = False  # shut for writing, dropping what arrives until the client closes

    def _state(self) -> AppState:
        cls = type(self)
        if cls.bound_state is None:  # Starlette's State lookup is slow enough to show on the hot path
            cls.bound_state = self.bound_app.state.cp
        return cls.bound_state

    def _limits(self) -> ConnectionLimits:
        cls = type(self)
        if cls.bound_limits is None:
            cls.bound_limits = ConnectionLimits.of(self._state())
        return cls.bound_limits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """A connection that sends nothing is closed after the header timeout."""
        super().connection_made(transport)
        self.flow = _ObservedFlow(transport, self)
        self._lim = self._limits()
        self._last_active = self.loop.time()
        self._arm(self._lim.header_timeout_s)

    # --- parser callbacks: count what arrives -----------------------------------------------------

    def begin_request(self) -> None:
        """A request's first byte: its headers are due within the header timeout."""
        self._receiving, self._headers_done = True, False
        self._request_started = self._last_active = self.loop.time()
        self._header_bytes = self._header_count = self._body_bytes = 0
        self._declared = None
        self._arm(self._lim.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        """Count the URL against the header size limit."""
        self._header_bytes += len(url)
        if self._header_bytes > self._lim.max_header_bytes:
            raise self._stop(HeadersTooLarge("the request line and headers are too large"))
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count headers (bytes and number), then keep them as uvicorn does (names lower-cased)."""
        limits = self._lim
        self._header_bytes += len(name) + len(value)
        self._header_count += 1
        if self._header_bytes > limits.max_header_bytes or self._header_count > limits.max_header_count:
            raise self._stop(
                HeadersTooLarge(
                    f"request headers are over the limit of {limits.max_header_count} headers or "
                    f"{limits.max_header_bytes} bytes"
                )
            )
        name = name.lower()
        if name == b"content-length":
            self._declared = value
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def check_declared_length(self) -> None:
        """At the end of the headers: a Content-Length over the path's limit is refused unread."""
        self._headers_done = True
        self._last_active = self.loop.time()
        limits = self._lim
        url = self.url
        upload = url.startswith(b"/v1/tenants/") and UPLOAD_PATH.match(url) is not None
        limit = self._body_limit = limits.upload_limit if upload else limits.body_limit
        declared = self._declared
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._stop(
                PayloadTooLarge(f"request body of {declared.decode()} bytes is over the limit of {limit}")
            )

    def declared_length(self) -> int | None:
        """The request's Content-Length, if it has a valid one."""
        declared = self._declared
        return int(declared) if declared is not None and declared.isdigit() else None

    def count_body(self, chunk: bytes) -> None:
        """A body chunk: progress for the body timeout, refused as soon as it passes the limit."""
        self._body_bytes += len(chunk)
        self._last_active = self.loop.time()
        if self._body_bytes > self._body_limit:
            raise self._stop(PayloadTooLarge(f"request body is over the limit of {self._body_limit} bytes"))

    def end_request(self) -> None:
        """The whole request is in."""
        self._receiving = False

    def request_answered(self) -> None:
        """An answer is out: the keep-alive timeout runs from now; hold reading while it is unread."""
        self._last_active = self.loop.time()
        self._arm(self.timeout_keep_alive)
        self.hold_reading_while_unread()

    def on_response_complete(self) -> None:
        """uvicorn's, noting the time for the keep-alive timeout. Answered before its body was in, a
        request's small rest is read past (uvicorn drops it) and the connection kept; a big or
        unknown rest is not worth reading: the connection closes, lingering."""
        self._last_active = self.loop.time()
        if self._receiving and not self._rest_is_small():
            self.linger()
        if self._lingering:  # no keep-alive and no pipelined request: only uvicorn's count
            self.server_state.total_requests += 1
            return
        super().on_response_complete()

    def _rest_is_small(self) -> bool:
        declared = self.declared_length()
        return declared is not None and declared - self._body_bytes <= DRAIN_LIMIT

    # --- refusing ---------------------------------------------------------------------------------

    def _stop(self, error: AppError) -> Refusal:
        """The Refusal to raise from a parser callback (uvicorn then calls send_400_response)."""
        self._refusal = Refusal(error)
        return self._refusal

    def send_400_response(self, msg: str) -> None:
        """uvicorn calls this when parsing fails, which is also how a Refusal stops the parser."""
        refusal, self._refusal = self._refusal, None
        if refusal is None:
            super().send_400_response(msg)
        else:
            self.refuse(refusal.error)

    def closing(self) -> bool:
        """Whether this connection is closing (lingering included): nothing more is read or written."""
        return self._lingering or self.transport.is_closing()

    def data_received(self, data: bytes) -> None:
        """Feed the parser; a Refusal raised by a callback is answered instead of uvicorn's 400."""
        if self.closing():
            return
        try:
            super().data_received(data)
        except Refusal as refusal:  # raised outside the parser (not expected, but answered the same)
            self.refuse(refusal.error)

    def refuse(self, error: AppError) -> None:
        """Answer the error as JSON and close, lingering; only close if an answer is already under way."""
        if self.closing():
            return
        if self._answering():
            self.transport.close()
            return
        reply = error_reply(error, v2=self.url.startswith(b"/v2"))
        head = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(reply.head)
        for name, value in reply.extra:
            head += b"%s: %s\r\n" % (name, value)
        head += b"connection: close\r\n\r\n"
        self.transport.write(STATUS_LINE[error.status_code] + head + reply.head)
        self.linger()

    def linger(self) -> None:
        """Close after the answers written so far, without resetting the client: shut our side for
        writing, drop what the client still sends, close when it closes or after LINGER_S. A request
        still being served is told the client is gone, so it writes nothing more."""
        transport = self.transport
        if self.closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        cycle = self.cycle
        if isinstance(cycle, RequestResponseCycle) and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()
        transport.write_eof()
        self.flow.resume_reading()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_later(LINGER_S, transport.close)

    def _answering(self) -> bool:
        """Whether a response on this connection is being produced (then a refusal only closes)."""
        return self.cycle is not None and self.cycle.response_started and not self.cycle.response_complete

    def _busy(self) -> bool:
        """Whether a request has been received and is being served."""
        return self.cycle is not None and not self.cycle.response_complete

    # --- the connection's one timer ---------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        if self._lingering:  # the timer is the linger's close
            return
        timer = self._timer
        if timer is not None:
            if timer.when() <= self.loop.time() + delay:
                return
            timer.cancel()
        self._timer = self.loop.call_later(delay, self._check_timeouts)

    def _check_timeouts(self) -> None:
        """Refuse a request whose headers or body are overdue, close an idle connection, re-arm."""
        self._timer = None
        if self.closing():
            return
        limits, now = self._lim, self.loop.time()
        wait: float
        if self.flow.read_paused:  # we stopped reading, not the client: its clocks restart on resume
            wait, message = self.timeout_keep_alive, ""
        elif self._receiving and not self._headers_done:
            wait = self._request_started + limits.header_timeout_s - now
            message = f"request headers did not arrive within {limits.header_timeout_s:g}s"
        elif self._receiving:
            wait = self._last_active + limits.body_timeout_s - now
            message = f"the request body stalled for over {limits.body_timeout_s:g}s"
        elif self._busy():
            wait, message = self.timeout_keep_alive, ""
        else:  # idle: after a request, the keep-alive time; one that never sent a byte, the header timeout
            idle = self.timeout_keep_alive if self._request_started else limits.header_timeout_s
            wait = self._last_active + idle - now
            message = ""
            if wait <= 0:
                self.timeout_keep_alive_handler()
                return
        if wait <= 0:
            self.refuse(RequestTimeout(message))
            return
        self._arm(wait)

    def reading_resumed(self) -> None:
        """Time spent with reading paused (by us or by uvicorn) does not count against the client."""
        now = self.loop.time()
        self._last_active = now
        if self._receiving and not self._headers_done:
            self._request_started = now

    def connection_lost(self, exc: Exception | None) -> None:
        """Also drop the timer."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # --- backpressure -----------------------------------------------------------------------------

    def hold_reading_while_unread(self) -> None:
        """After writing an answer: read no further requests while the client is not reading."""
        if self.flow.write_paused:
            self._reading_held = True
            self.flow.pause_reading()
        else:
            self.flow.resume_reading()

    def resume_writing(self) -> None:
        """The client caught up: read again if we held reading for it."""
        super().resume_writing()
        if self._reading_held:
            self._reading_held = False
            self.flow.resume_reading()
