"""uvicorn's httptools protocol with `POST /v2/models/.../infer` served straight from the parser.

Most of the proxy's CPU per request went to the ASGI machinery (scope, task, receive/send messages)
and to writing headers and body separately. Here an infer request is parsed by httptools, handed to
the shared hot path (`infer.py`), and answered with one write. Everything else (management API,
metadata, pipelined requests, Expect: 100-continue, HTTP/1.0) takes uvicorn's normal ASGI path.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from control_plane.dataplane.exchange import Exchange, Reply, error_reply, parse_models_path
from control_plane.dataplane.infer import begin, check_limits, infer, observe
from control_plane.errors import AppError, PayloadTooLarge
from control_plane.state import AppState

log = logging.getLogger(__name__)


class _Busy:
    """Stands in for uvicorn's cycle while a fast request is in flight, so pipelined ones queue up."""

    response_complete = False


_BUSY = _Busy()


class FastPathProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus the inference fast path; `bound_app` is set by `fast_path_protocol`."""

    bound_app: FastAPI
    bound_state: AppState | None = None  # the app's state once its lifespan has started

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast: _FastRequest | None = None
        self._fast_busy = False
        self._closing = False

    def on_headers_complete(self) -> None:
        """Take infer requests on an idle connection; leave everything else to uvicorn."""
        idle = not self._fast_busy and (self.cycle is None or self.cycle.response_complete)
        if idle and self._is_infer():
            self._fast = _FastRequest(self.url, self.headers, keep_alive=self.parser.should_keep_alive())
            return
        if self._fast_busy:  # a pipelined request behind a fast one: let uvicorn queue it
            self.cycle = _BUSY  # type: ignore[assignment]
        super().on_headers_complete()

    def _is_infer(self) -> bool:
        return (
            self.parser.get_method() == b"POST"
            and self.url.startswith(b"/v2/models/")
            and self.url.endswith(b"/infer")
            and self.parser.get_http_version() == "1.1"
            and not self.expect_100_continue
            and not self.parser.should_upgrade()
        )

    def on_body(self, body: bytes) -> None:
        """Collect a fast request's body; uvicorn's otherwise."""
        if self._fast is None:
            super().on_body(body)
            return
        self._fast.add(body, limit=self._state().settings.max_request_bytes)

    def on_message_complete(self) -> None:
        """Start serving a fast request; uvicorn's otherwise."""
        request, self._fast = self._fast, None
        if request is None:
            super().on_message_complete()
            return
        self._fast_busy = True
        task = self.loop.create_task(self._serve(request))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def _state(self) -> AppState:
        cls = type(self)
        if cls.bound_state is None:  # Starlette's State lookup is slow enough to show on the hot path
            cls.bound_state = self.bound_app.state.cp
        return cls.bound_state

    async def _serve(self, request: _FastRequest) -> None:
        state = self._state()
        ex = Exchange(dict(request.headers))
        reply: Reply | None = None
        try:
            reply = await self._answer(state, ex, request)
        except AppError as exc:
            reply = error_reply(exc, v2=True)
        except Exception:
            log.exception("fast path failed")
            reply = error_reply(AppError("internal error"), v2=True)
        finally:
            self._write(ex, reply, keep_alive=request.keep_alive)
            observe(state, ex, total_s=time.perf_counter() - ex.started)
        if reply is not None and reply.after is not None:
            reply.after()

    async def _answer(self, state: AppState, ex: Exchange, request: _FastRequest) -> Reply:
        model, version, _ = parse_models_path(request.url.split(b"?", 1)[0].decode("latin-1"))
        begin(state, ex, model=model, version=version)
        check_limits(state, ex)
        if request.too_large:
            raise PayloadTooLarge(
                f"request body is over the limit of {state.settings.max_request_bytes} bytes"
            )
        return await infer(state, ex, request.body())

    def _write(self, ex: Exchange, reply: Reply | None, *, keep_alive: bool) -> None:
        self._fast_busy = False
        if self.cycle is _BUSY:  # type: ignore[comparison-overlap]
            self.cycle = None  # type: ignore[assignment]
        if reply is None or self.transport.is_closing():
            return
        lines: list[bytes | memoryview] = [STATUS_LINE[reply.status]]
        for name, value in ex.response_headers(reply):
            lines += (name, b": ", value, b"\r\n")
        keep_alive = keep_alive and not self._closing
        if not keep_alive:
            lines.append(b"connection: close\r\n")
        lines += (b"\r\n", reply.head, reply.tail)
        self.transport.write(b"".join(lines))  # one write: status line, headers and body together
        if keep_alive:
            self.on_response_complete()  # uvicorn's bookkeeping: reading, pipelined requests, keep-alive
        else:
            self.transport.close()

    def shutdown(self) -> None:
        """Graceful shutdown: finish a fast request in flight before closing."""
        if self._fast_busy:
            self._closing = True  # _write answers, then closes
            return
        super().shutdown()


class _FastRequest:
    """A parsed infer request: URL, headers and body chunks."""

    __slots__ = ("_chunks", "_size", "headers", "keep_alive", "too_large", "url")

    def __init__(self, url: bytes, headers: list[tuple[bytes, bytes]], *, keep_alive: bool):
        self.url, self.headers, self.keep_alive = url, headers, keep_alive
        self._chunks: list[bytes] = []
        self._size = 0
        self.too_large = False

    def add(self, chunk: bytes, *, limit: int) -> None:
        """Keep a body chunk unless the body went over `limit` (then answer 413 once it has arrived)."""
        self._size += len(chunk)
        if self._size > limit:
            self.too_large, self._chunks = True, []
        elif not self.too_large:
            self._chunks.append(chunk)

    def body(self) -> bytes:
        """The whole body."""
        return self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)


def fast_path_protocol(app: FastAPI) -> type[FastPathProtocol]:
    """The protocol class to give uvicorn (`http=`) for this app."""
    return type("BoundFastPathProtocol", (FastPathProtocol,), {"bound_app": app})
