"""KServe v2 HTTP data plane: a pure-ASGI handler in front of the FastAPI app, for the hot path.

Infer bodies (JSON or Triton's binary-tensor extension) are passed through untouched; only the
model name in the path and in the response's JSON header is rewritten.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.dataplane import predict
from control_plane.dataplane.auth import Caller, authenticate
from control_plane.dataplane.requests import Call, parse_models_path, read_body, send_response
from control_plane.dataplane.rewrite import rewrite_infer_response, rewrite_metadata
from control_plane.dataplane.upstream import triton_error
from control_plane.errors import AppError, NotFound, ServiceUnavailable
from control_plane.routing.router import ModelLoading, Resolved
from control_plane.state import AppState

JSON = b"application/json"
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
        call = Call(scope, receive, send, started=time.perf_counter())
        try:
            await self._dispatch(state, call, path)
        except AppError as exc:
            await call.send_error(exc, v2=path.startswith("/v2"))
        except Exception:
            # Outside the app's error middleware: nothing unforeseen may reach the client as a stack trace.
            log.exception("data plane failed on %s", path)
            if not call.responded:
                await call.send_error(AppError("internal error"), v2=path.startswith("/v2"))
        finally:
            if call.resolved is not None:
                _observe(state, call)

    async def _dispatch(self, state: AppState, call: Call, path: str) -> None:
        method = call.scope["method"]
        if path == "/metrics" and method == "GET":
            await send_response(
                call.send, 200, generate_latest(state.metrics.registry), CONTENT_TYPE_LATEST.encode()
            )
            return
        if path in ("/v2", "/v2/") and method == "GET":
            await _server_metadata(state, call)
            return
        if path.startswith("/v1/predict/") and method == "POST":
            call.caller = _caller(state, call)
            call.resolved = _resolve(state, call, path.removeprefix("/v1/predict/"), version=None)
            await predict.handle(state, call)
            return
        model, version, action = parse_models_path(path)
        handler = _ACTIONS.get((method, action))
        if handler is None:
            raise NotFound(f"no route for {method} {path}")
        call.caller = _caller(state, call)
        call.resolved = _resolve(state, call, model, version=version)
        await handler(state, call)


def _caller(state: AppState, call: Call) -> Caller:
    admin = state.settings.admin_token
    caller = authenticate(
        state.router.table,
        authorization=call.header(b"authorization"),
        tenant_header=call.header(b"x-tenant"),
        admin_token=admin.get_secret_value() if admin is not None else None,
    )
    state.key_usage.touch(caller.key_id)
    return caller


def _resolve(state: AppState, call: Call, model: str, *, version: int | None) -> Resolved:
    assert call.caller is not None
    return state.router.resolve(
        tenant_id=call.caller.tenant_id,
        model=model,
        alias=call.header(b"x-model-alias"),
        version=version,
        routing_key=call.header(b"x-routing-key"),
    )


async def _infer(state: AppState, call: Call) -> None:
    resolved, caller = call.resolved, call.caller
    assert resolved is not None and caller is not None
    state.limits.check_rate(caller.tenant_id)
    with state.limits.slot(caller.tenant_id):
        body = await read_body(call, limit=state.settings.max_request_bytes)
        path = f"/v2/models/{resolved.triton_name}/infer"
        state.inflight[resolved.triton_name] += 1
        try:
            upstream = await call.timed_upstream(
                state.upstream.request(b"POST", path, body=body, headers=call.forward_headers())
            )
        finally:
            state.inflight[resolved.triton_name] -= 1
    if upstream.status != 200:
        raise triton_error(upstream, resolved)
    raw_length = upstream.headers.get(b"inference-header-content-length")
    header_length = int(raw_length) if raw_length is not None else None
    head, tail, new_length = rewrite_infer_response(
        upstream.body,
        header_length=header_length,
        triton_name=resolved.triton_name,
        model=resolved.model,
        version=resolved.version,
    )
    extra = [(b"inference-header-content-length", str(new_length).encode())] if new_length is not None else []
    content_type = upstream.headers.get(b"content-type", JSON)
    await call.respond(200, content_type, head, tail, extra)
    if resolved.shadow is not None:  # after the live response is out: never on its latency
        state.shadow.mirror(
            resolved=resolved,
            body=body,
            headers=call.forward_headers(),
            live_body=upstream.body,
            live_header_length=header_length,
        )


async def _metadata(state: AppState, call: Call) -> None:
    await _forward_metadata(state, call, "")


async def _config(state: AppState, call: Call) -> None:
    await _forward_metadata(state, call, "/config")


async def _forward_metadata(state: AppState, call: Call, suffix: str) -> None:
    resolved = call.resolved
    assert resolved is not None
    upstream = await call.timed_upstream(
        state.upstream.request(b"GET", f"/v2/models/{resolved.triton_name}{suffix}")
    )
    if upstream.status != 200:
        raise triton_error(upstream, resolved)
    body = rewrite_metadata(upstream.body, model=resolved.model, version=resolved.version)
    await call.respond(200, JSON, body)


async def _ready(state: AppState, call: Call) -> None:
    resolved = call.resolved
    assert resolved is not None
    upstream = await call.timed_upstream(
        state.upstream.request(b"GET", f"/v2/models/{resolved.triton_name}/ready")
    )
    if upstream.status != 200:
        raise ModelLoading(f"model '{resolved.model}' version {resolved.version} is not ready", retry_after=2)
    await call.respond(200, JSON, b"")


async def _server_metadata(state: AppState, call: Call) -> None:
    upstream = await state.upstream.request(b"GET", "/v2")
    if upstream.status != 200:
        raise ServiceUnavailable("Triton did not answer its metadata call")
    document = orjson.loads(upstream.body)
    await send_response(call.send, 200, orjson.dumps({**document, "name": "triton-control-plane"}), JSON)


def _observe(state: AppState, call: Call) -> None:
    resolved = call.resolved
    assert resolved is not None
    state.metrics.observe(
        tenant=resolved.tenant,
        model=resolved.model,
        version=str(resolved.version),
        protocol="http",
        status=call.status,
        total_s=time.perf_counter() - call.started,
        upstream_s=call.upstream_s,
    )


_ACTIONS: dict[tuple[str, str], Handler] = {
    ("POST", "infer"): _infer,
    ("GET", ""): _metadata,
    ("GET", "ready"): _ready,
    ("GET", "config"): _config,
}

__all__ = ["HttpDataPlane", "Message"]
