"""uvicorn's httptools protocol with `POST /v2/models/.../infer` served straight from the parser.

Most of the proxy's CPU per request went to the ASGI machinery (scope, task, receive/send messages),
to coroutines, futures and timers, and to writing headers and body separately. Here an infer request
is parsed by httptools, handed to the shared hot path (`infer.py`) from the parser's callback, and
answered with one write from the upstream connection's callback: no task, future or timer per
request. Everything else (management API, metadata, pipelined requests, Expect: 100-continue,
HTTP/1.0) takes uvicorn's normal ASGI path. Connection-level limits are `GuardedProtocol`'s.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from control_plane.dataplane.connection import DRAIN_LIMIT, GuardedProtocol
from control_plane.dataplane.exchange import Exchange, Reply, error_reply, parse_models_path
from control_plane.dataplane.infer import begin, check_limits, observe, start_infer
from control_plane.dataplane.uvicorn_compat import check_uvicorn
from control_plane.errors import AppError, NotFound, ServiceUnavailable

log = logging.getLogger(__name__)


class _Busy:
    """Stands in for uvicorn's cycle while a fast request is in flight, so pipelined ones queue up."""

    response_complete = False


_BUSY = _Busy()
# Requests queued behind the one being answered on a connection. httptools parses all a read holds: 256 KiB
# of pipelined GETs queued 9.4k requests (a scope each) in one go, 0.16-0.22 s of the event loop.
MAX_PIPELINED = 32


class FastPathProtocol(GuardedProtocol):
    """The guarded httptools protocol plus the inference fast path; `bound_app` is set by
    `fast_path_protocol`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast: _FastRequest | None = None  # a fast request being received
        self._serving: _FastRequest | None = None  # a fast request waiting for its answer
        self._closing = False

    def on_message_begin(self) -> None:
        """Reset the per-request fields; the ASGI scope is only built if uvicorn serves the request."""
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self.begin_request()

    def on_headers_complete(self) -> None:
        """Take infer requests on an idle connection; leave everything else to uvicorn."""
        self.check_declared_length()
        busy = self._serving is not None
        if not busy and (self.cycle is None or self.cycle.response_complete) and self._is_infer():
            self._fast = self._admit(_FastRequest(self.url, self.headers, self.parser.should_keep_alive()))
            return
        if len(self.pipeline) >= MAX_PIPELINED:
            raise self._stop(ServiceUnavailable("too many pipelined requests on one connection"))
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        HttpToolsProtocol.on_message_begin(self)  # uvicorn's: builds the scope (and resets the parsed)
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        if busy:  # a pipelined request behind a fast one: let uvicorn queue it
            self.cycle = _BUSY  # type: ignore[assignment]
        super().on_headers_complete()

    def _admit(self, request: _FastRequest) -> _FastRequest:
        """Authenticate, resolve and limit from the headers alone. A refused small body is read and
        dropped, then answered, keeping the connection; a refused big one is never read: answered now
        and the connection closed."""
        state = self._state()
        ex = request.ex = Exchange(dict(request.headers))
        try:
            path = request.url.partition(b"?")[0].decode("latin-1")
            model, version, action = parse_models_path(path)
            if action != "infer":  # "/v2/models/infer" names a model, not an action: no route, as on ASGI
                raise NotFound(f"no route for POST {path}")
            begin(state, ex, model=model, version=version)
            check_limits(state, ex)
        except Exception as caught:
            # A bug of ours is a 500 that says nothing, as on the rest of the fast path: raised out of the
            # parser's callback, uvicorn would answer it as the client's "Invalid HTTP request" (400).
            exc = caught if isinstance(caught, AppError) else _internal(caught)
            declared = self.declared_length()
            if declared is not None and declared <= DRAIN_LIMIT:
                request.refused = exc
                return request
            ex.status = exc.status_code
            observe(state, ex, total_s=time.perf_counter() - ex.started)
            raise self._stop(exc) from None
        return request

    def _is_infer(self) -> bool:
        url = self.url
        return (
            url.startswith(b"/v2/models/")
            and url.partition(b"?")[0].endswith(b"/infer")  # not a query's "?/infer"
            and self.parser.get_method() == b"POST"
            and self.parser.get_http_version() == "1.1"
            and not self.expect_100_continue
            and not self.parser.should_upgrade()
        )

    def on_body(self, body: bytes) -> None:
        """Collect a fast request's body; uvicorn's otherwise (both counted against the limit)."""
        self.count_body(body)
        fast = self._fast
        if fast is None:
            super().on_body(body)
        elif fast.refused is None:
            fast.add(body)

    def on_message_complete(self) -> None:
        """Start serving a fast request (no task: the answer comes back by callback); uvicorn's otherwise."""
        self.end_request()
        request, self._fast = self._fast, None
        if request is None:
            super().on_message_complete()
            return
        self._serving = request
        state, ex = self._state(), request.ex
        assert ex is not None
        if request.refused is not None:
            self._answer(request.refused)
            return
        try:
            start_infer(state, ex, request.body(), self._answer)
        except Exception as caught:
            self._answer(caught if isinstance(caught, AppError) else _internal(caught))

    def _answer(self, outcome: Reply | AppError) -> None:
        """Write the reply (or the error), record the request, then run the reply's after-work."""
        request, self._serving = self._serving, None
        if request is None or request.ex is None:
            return
        ex = request.ex
        reply = error_reply(outcome, v2=True) if isinstance(outcome, AppError) else outcome
        try:
            self._write(ex, reply, keep_alive=request.keep_alive)
        finally:
            observe(self._state(), ex, total_s=time.perf_counter() - ex.started)
        if reply.after is not None:
            reply.after()

    def _write(self, ex: Exchange, reply: Reply, *, keep_alive: bool) -> None:
        if self.cycle is _BUSY:  # type: ignore[comparison-overlap]
            self.cycle = None  # type: ignore[assignment]
        if self.closing():
            return
        keep_alive = keep_alive and not self._closing
        head = STATUS_LINE[reply.status] + ex.response_header_block(reply)
        head += b"\r\n" if keep_alive else b"connection: close\r\n\r\n"
        if len(reply.tail) > 64 * 1024:  # big tensors: a vectored write, not a copy
            self.transport.writelines((head, reply.head, reply.tail))
        else:  # one write: status line, headers and body together
            self.transport.write(b"".join((head, reply.head, reply.tail)))
        if keep_alive:
            self._response_complete()
        else:
            self.transport.close()

    def _response_complete(self) -> None:
        """uvicorn's on_response_complete, with the connection's one lazy timer, not one per request."""
        self.server_state.total_requests += 1
        self.request_answered()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)

    def connection_lost(self, exc: Exception | None) -> None:
        """A fast request still waiting for its version's load stops waiting (nobody reads its answer)."""
        serving = self._serving
        if serving is not None and serving.ex is not None and serving.ex.cancel is not None:
            serving.ex.cancel()
        super().connection_lost(exc)

    def _answering(self) -> bool:
        return self._serving is not None or super()._answering()

    def _busy(self) -> bool:
        return self._serving is not None or super()._busy()

    def shutdown(self) -> None:
        """Graceful shutdown: finish a fast request in flight before closing."""
        if self._serving is not None:
            self._closing = True  # _write answers, then closes
            return
        super().shutdown()


class _FastRequest:
    """A parsed infer request: URL, headers and body chunks."""

    __slots__ = ("_chunks", "ex", "headers", "keep_alive", "refused", "url")

    def __init__(self, url: bytes, headers: list[tuple[bytes, bytes]], keep_alive: bool):
        self.url, self.headers, self.keep_alive = url, headers, keep_alive
        self.ex: Exchange | None = None
        self.refused: AppError | None = None  # answered once its (small) body has been read past
        self._chunks: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        """Keep a body chunk (the protocol has counted it against the limit)."""
        self._chunks.append(chunk)

    def body(self) -> bytes:
        """The whole body."""
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)


def fast_path_protocol(app: FastAPI) -> type[FastPathProtocol]:
    """The protocol class to give uvicorn (`http=`) for this app."""
    check_uvicorn()
    return type("BoundFastPathProtocol", (FastPathProtocol,), {"bound_app": app})


def _internal(exc: Exception) -> AppError:
    """The 500 an unforeseen exception on the fast path is answered with (logged, with its traceback)."""
    log.error("fast path failed", exc_info=exc)
    return AppError("internal error")
