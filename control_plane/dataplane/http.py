"""KServe v2 HTTP data plane: a pure-ASGI handler in front of the FastAPI app, for the hot path.

Infer bodies (JSON or Triton's binary-tensor extension) are passed through untouched; only the
model name in the path and in the response's JSON header is rewritten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.dataplane import predict
from control_plane.dataplane.auth import authorize_metrics, require_key
from control_plane.dataplane.exchange import JSON, Exchange, Reply, error_reply, parse_models_path
from control_plane.dataplane.infer import begin, check_limits, infer, loaded_on_demand, observe, wait_resident
from control_plane.dataplane.requests import Call, read_body, send_response, watching_for_hangup
from control_plane.dataplane.rewrite import rewrite_metadata, server_metadata
from control_plane.dataplane.upstream import triton_error
from control_plane.errors import AppError, NotFound, ServiceUnavailable
from control_plane.routing.router import ModelLoading
from control_plane.state import AppState

log = logging.getLogger(__name__)
Handler = Callable[[AppState, Call], Awaitable[None]]


class HttpDataPlane:
    """Serves `/v2/models/...`, `/v2`, `/v1/predict/...` and `/metrics`; everything else goes to the app."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(("/v2/models/", "/v1/predict/", "/metrics", "/v2")):
            await self.app(scope, receive, send)
            return
        if path.startswith("/v2/health"):
            await self.app(scope, receive, send)
            return
        state: AppState = scope["app"].state.cp
        call = Call(scope, receive, send, Exchange(dict(scope["headers"])))
        try:
            await self._dispatch(state, call, path)
        except AppError as exc:
            await call.respond(error_reply(exc, v2=path.startswith("/v2")))
        except Exception:
            # Outside the app's error middleware: nothing unforeseen may reach the client as a stack trace.
            log.exception("data plane failed on %s", path)
            if not call.responded:
                await call.respond(error_reply(AppError("internal error"), v2=path.startswith("/v2")))
        finally:
            observe(state, call.ex, total_s=time.perf_counter() - call.ex.started)

    async def _dispatch(self, state: AppState, call: Call, path: str) -> None:
        method = call.scope["method"]
        if path == "/metrics" and method == "GET":
            _authorize_metrics(state, call)
            # Rendered in a thread: it grows with the tenants' models and versions (6000 series took
            # 0.28 s); from a thread the event loop gets its turn every few milliseconds
            metrics = await asyncio.to_thread(generate_latest, state.metrics.registry)
            await send_response(call.send, 200, metrics, CONTENT_TYPE_LATEST.encode())
            return
        if path in ("/v2", "/v2/") and method == "GET":
            await _server_metadata(state, call)
            return
        if path.startswith("/v1/predict/") and method == "POST":
            begin(state, call.ex, model=path.removeprefix("/v1/predict/"), version=None)
            await predict.handle(state, call)
            return
        model, version, action = parse_models_path(path)
        handler = _ACTIONS.get((method, action))
        if handler is None:
            raise NotFound(f"no route for {method} {path}")
        begin(state, call.ex, model=model, version=version)
        await handler(state, call)


def _authorize_metrics(state: AppState, call: Call) -> None:
    settings = state.settings
    authorize_metrics(
        state.router.table,
        authorization=call.ex.header(b"authorization"),
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        metrics_token=settings.metrics_token.get_secret_value() if settings.metrics_token else None,
    )


async def _infer(state: AppState, call: Call) -> None:
    check_limits(state, call.ex)
    body = await read_body(call, limit=state.settings.max_request_bytes)
    async with watching_for_hangup(call):
        reply = await infer(state, call.ex, body)
    await call.respond(reply)
    if reply.after is not None:
        reply.after()


async def _metadata(state: AppState, call: Call) -> None:
    await _forward_metadata(state, call, "")


async def _config(state: AppState, call: Call) -> None:
    await _forward_metadata(state, call, "/config")


async def _forward_metadata(state: AppState, call: Call, suffix: str) -> None:
    resolved = call.ex.resolved
    assert resolved is not None
    async with watching_for_hangup(call):
        await wait_resident(state, call.ex)
    upstream = await call.ex.timed(
        state.upstream.request(b"GET", f"/v2/models/{resolved.triton_name}{suffix}")
    )
    if upstream.status != 200:
        raise triton_error(upstream, resolved)
    body = rewrite_metadata(
        upstream.body, triton_name=resolved.triton_name, model=resolved.model, version=resolved.version
    )
    await call.respond(Reply(200, JSON, body))


async def _ready(state: AppState, call: Call) -> None:
    resolved = call.ex.resolved
    assert resolved is not None
    if loaded_on_demand(state, call.ex):
        await call.respond(Reply(200, JSON, b""))
        return
    upstream = await call.ex.timed(state.upstream.request(b"GET", f"/v2/models/{resolved.triton_name}/ready"))
    if upstream.status != 200:
        raise ModelLoading(f"model '{resolved.model}' version {resolved.version} is not ready", retry_after=2)
    await call.respond(Reply(200, JSON, b""))


async def _server_metadata(state: AppState, call: Call) -> None:
    admin = state.settings.admin_token
    require_key(
        state.router.table,
        authorization=call.ex.header(b"authorization"),
        admin_token=admin.get_secret_value() if admin else None,
    )
    upstream = await state.upstream.request(b"GET", "/v2")
    if upstream.status != 200:
        raise ServiceUnavailable("the inference server did not answer its metadata call")
    await send_response(call.send, 200, server_metadata(upstream.body), JSON)


_ACTIONS: dict[tuple[str, str], Handler] = {
    ("POST", "infer"): _infer,
    ("GET", ""): _metadata,
    ("GET", "ready"): _ready,
    ("GET", "config"): _config,
}

__all__ = ["HttpDataPlane", "Message"]
