"""KServe v2 GRPCInferenceService on its own port: authenticate, resolve, pass the bytes on to Triton.

ModelInfer never decodes tensors: the request stays raw bytes and only its leading `model_name` /
`model_version` fields are rewritten on the wire (see `protowire`), in both directions.
Liveness and readiness answer without a key, like Triton's; every other call needs one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import grpc
from google.protobuf import text_format
from grpc import aio
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc.service_pb2_grpc import GRPCInferenceServiceStub

from control_plane.dataplane import protowire
from control_plane.dataplane.auth import Caller, authenticate
from control_plane.dataplane.balance import Backend
from control_plane.dataplane.checks import as_app_error
from control_plane.dataplane.contract import Rejected
from control_plane.dataplane.grpc_check import check_infer_request
from control_plane.dataplane.grpc_errors import Code, RpcFailure, guarded, upstream_failure
from control_plane.dataplane.rewrite import HIDDEN_EXTENSIONS
from control_plane.errors import AppError
from control_plane.routing.router import ModelLoading, Resolved
from control_plane.state import AppState

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
_UPSTREAM_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    # Reconnect quickly after a Triton restart instead of backing off for up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
_HEALTH_TIMEOUT_S = 2.0
_MAX_CACHED_CALLERS = 10_000


@dataclass(frozen=True, slots=True)
class _Who:
    """The authenticated caller and the routing hints from the call's metadata."""

    caller: Caller
    alias: str | None
    routing_key: str | None


@dataclass(slots=True)
class _Outcome:
    """What one ModelInfer call records in the metrics."""

    tenant: str = ""
    model: str = ""
    version: str = ""
    upstream_s: float | None = None


class _Upstream:
    """One pooled channel to a Triton: raw bytes for ModelInfer, the typed stub for the rest."""

    def __init__(self, target: str):
        self.channel = aio.insecure_channel(target, options=_UPSTREAM_OPTIONS)
        # No serializers: bytes in, bytes out.
        self.infer = self.channel.unary_unary(f"/{SERVICE}/ModelInfer")
        self.stub = GRPCInferenceServiceStub(self.channel)


@lru_cache(maxsize=4096)
def _head(name: str, version: str) -> bytes:
    """Fields 1 and 2 (model name and version) as they go on the wire."""
    return protowire.string_field(1, name.encode()) + protowire.string_field(2, version.encode())


class GrpcProxy:
    """The gRPC data plane, serving on the app's event loop."""

    def __init__(self, state: AppState):
        self.state = state
        token = state.settings.admin_token
        self._admin_token = token.get_secret_value() if token is not None else None
        self._upstreams: dict[str, _Upstream] = {}
        # Successful authentications by (authorization, x-tenant), valid for one routing table.
        self._callers: dict[tuple[str | None, str | None], Caller] = {}
        self._callers_table: object = None
        self._in_flight = state.metrics.in_flight.labels("grpc")
        self._server: aio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        """Bind `host:port` and start serving."""
        settings = self.state.settings
        server = aio.server(
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a silent second listener
                # The same connection-level limits as the HTTP side: a client that connects and says
                # nothing, or sends huge metadata, is dropped.
                ("grpc.server_handshake_timeout_ms", int(settings.header_timeout_s * 1000)),
                ("grpc.max_metadata_size", settings.max_header_bytes),
                ("grpc.max_connection_idle_ms", 5 * 60 * 1000),
            ]
        )
        handlers = self._handlers()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        server.add_registered_method_handlers(SERVICE, handlers)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.port = server.add_insecure_port(address)
        if not self.port:
            raise RuntimeError(f"gRPC data plane cannot listen on {address}")
        await server.start()
        self._server = server
        for triton in self.state.tritons:
            self._upstream_for(triton.grpc_url).channel.get_state(try_to_connect=True)

    async def stop(self, grace_s: float) -> None:
        """Finish in-flight calls (up to `grace_s`), then close the upstream channels."""
        if self._server is not None:
            await self._server.stop(grace_s)
            self._server = None
        upstreams, self._upstreams = self._upstreams, {}
        for upstream in upstreams.values():
            await upstream.channel.close()

    def _handlers(self) -> dict[str, grpc.RpcMethodHandler]:
        typed = {
            "ServerLive": (self._server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (self._server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ServerMetadata": (self._server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelReady": (self._model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ModelMetadata": (self._model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelConfig": (self._model_config, pb.ModelConfigRequest, pb.ModelConfigResponse),
        }
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                guarded(method),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
            for name, (method, request, response) in typed.items()
        }
        handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(guarded(self._model_infer))
        return handlers

    # --- health and metadata -------------------------------------------------------------------

    async def _server_live(self, _: Any, __: aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def _server_ready(self, _: Any, __: aio.ServicerContext) -> Any:
        """Ready when at least one Triton is."""
        targets = {t.grpc_url for t in self.state.tritons}
        answers = await asyncio.gather(
            *(
                self._upstream_for(t).stub.ServerReady(pb.ServerReadyRequest(), timeout=_HEALTH_TIMEOUT_S)
                for t in targets
            ),
            return_exceptions=True,
        )
        return pb.ServerReadyResponse(ready=any(getattr(a, "ready", False) for a in answers))

    async def _server_metadata(self, request: Any, context: aio.ServicerContext) -> Any:
        self._who(context)
        answer = await self._call(self._upstream(None).stub.ServerMetadata, request, context, None)
        kept = [e for e in answer.extensions if e not in HIDDEN_EXTENSIONS]
        return pb.ServerMetadataResponse(name=answer.name, version=answer.version, extensions=kept)

    async def _model_ready(self, request: Any, context: aio.ServicerContext) -> Any:
        who = self._who(context)
        try:
            resolved = self._resolve(who, request.name, request.version)
        except AppError as exc:  # unknown and loading read as "not ready", as Triton says
            if exc.status_code == 404 or isinstance(exc, ModelLoading):
                return pb.ModelReadyResponse(ready=False)
            raise
        upstream_request = pb.ModelReadyRequest(name=resolved.triton_name)
        stub = self._upstream(resolved.triton_name).stub
        return await self._call(stub.ModelReady, upstream_request, context, resolved)

    async def _model_metadata(self, request: Any, context: aio.ServicerContext) -> Any:
        resolved = self._resolve(self._who(context), request.name, request.version)
        upstream_request = pb.ModelMetadataRequest(name=resolved.triton_name)
        stub = self._upstream(resolved.triton_name).stub
        answer = await self._call(stub.ModelMetadata, upstream_request, context, resolved)
        answer.versions[:] = [str(resolved.version)]
        return _hide_internal_name(answer, resolved)

    async def _model_config(self, request: Any, context: aio.ServicerContext) -> Any:
        resolved = self._resolve(self._who(context), request.name, request.version)
        upstream_request = pb.ModelConfigRequest(name=resolved.triton_name)
        stub = self._upstream(resolved.triton_name).stub
        answer = await self._call(stub.ModelConfig, upstream_request, context, resolved)
        return _hide_internal_name(answer, resolved)

    # --- inference -----------------------------------------------------------------------------

    async def _model_infer(self, request: bytes, context: aio.ServicerContext) -> bytes:
        started = time.perf_counter()
        outcome = _Outcome()
        status = "OK"
        try:
            return await self._infer(request, context, outcome)
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except Exception as exc:
            status = RpcFailure.of(exc).code.name
            raise
        finally:
            self.state.metrics.observe(
                tenant=outcome.tenant,
                model=outcome.model,
                version=outcome.version,
                protocol="grpc",
                status=status,
                total_s=time.perf_counter() - started,
                upstream_s=outcome.upstream_s,
            )

    async def _infer(self, request: bytes, context: aio.ServicerContext, outcome: _Outcome) -> bytes:
        who = self._who(context)
        outcome.tenant = who.caller.tenant
        head = protowire.read_head(request)
        parsed: Any = None  # only when the fields are not where a stock client puts them
        if head is None:
            parsed = pb.ModelInferRequest.FromString(request)
            name, version = parsed.model_name, parsed.model_version
        else:
            name, version = head.field1.decode(), head.field2.decode()
        resolved = self._resolve(who, name, version)
        outcome.model, outcome.version = resolved.model, str(resolved.version)
        try:
            check_infer_request(request, resolved.contract)
        except Rejected as exc:
            raise as_app_error(exc) from None
        if head is None:
            parsed.model_name, parsed.model_version = resolved.triton_name, ""
            request = parsed.SerializeToString()
        else:
            request = protowire.replace_head(request, _head(resolved.triton_name, ""), head.body)
        state = self.state
        state.limits.check_rate(who.caller.tenant_id)
        with state.limits.slot(who.caller.tenant_id):
            self._in_flight.inc()
            state.inflight[resolved.triton_name] += 1  # the keep-warm janitor won't unload it meanwhile
            sent = time.perf_counter()
            try:
                response = await self._infer_call(request, context, resolved)
            finally:
                outcome.upstream_s = time.perf_counter() - sent
                state.inflight[resolved.triton_name] -= 1
                self._in_flight.dec()
        return _rewrite_response(response, resolved)

    # --- helpers -------------------------------------------------------------------------------

    def _who(self, context: aio.ServicerContext) -> _Who:
        """Authenticate the call (key from `authorization`, admins' tenant from `x-tenant`)."""
        authorization = tenant = alias = routing_key = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = value
            elif key == "x-tenant":
                tenant = value
            elif key == "x-model-alias":
                alias = value
            elif key == "x-routing-key":
                routing_key = value
        caller = self._caller(authorization, tenant)
        self.state.key_usage.touch(caller.key_id)
        return _Who(caller=caller, alias=alias, routing_key=routing_key)

    def _caller(self, authorization: str | None, tenant: str | None) -> Caller:
        table = self.state.router.table
        if table is not self._callers_table:  # keys or tenants changed: authenticate afresh
            self._callers.clear()
            self._callers_table = table
        caller = self._callers.get((authorization, tenant))
        if caller is None:
            caller = authenticate(
                table, authorization=authorization, tenant_header=tenant, admin_token=self._admin_token
            )
            if len(self._callers) >= _MAX_CACHED_CALLERS:
                self._callers.clear()
            self._callers[(authorization, tenant)] = caller
        return caller

    def _resolve(self, who: _Who, model: str, version: str) -> Resolved:
        number = None
        if version:
            if not (version.isascii() and version.isdigit()):
                raise RpcFailure(Code.INVALID_ARGUMENT, f"model version '{version}' is not a number")
            number = int(version)
        return self.state.router.resolve(
            tenant_id=who.caller.tenant_id,
            model=model,
            alias=who.alias,
            version=number,
            routing_key=who.routing_key,
        )

    def _upstream(self, triton_name: str | None) -> _Upstream:
        """The channel to the instance for a call about `triton_name` (the data plane's choice)."""
        return self._upstream_for(self.state.upstream.choose(triton_name).grpc_url)

    async def _infer_call(self, request: bytes, context: aio.ServicerContext, resolved: Resolved) -> bytes:
        """ModelInfer on an instance with the version ready; once more on another if the first could
        not be reached (UNAVAILABLE from the transport, not from Triton)."""
        upstream, name = self.state.upstream, resolved.triton_name
        backend = upstream.choose(name)
        try:
            return await self._infer_on(backend, request, context)
        except aio.AioRpcError as exc:
            other = upstream.after_failure(backend, name, "grpc") if _unreached(exc, resolved) else None
            if other is None:
                raise upstream_failure(exc, resolved, self._timeout(context)) from None
        try:
            return await self._infer_on(other, request, context)
        except aio.AioRpcError as exc:
            if _unreached(exc, resolved):
                upstream.failed(other)
            raise upstream_failure(exc, resolved, self._timeout(context)) from None

    async def _infer_on(self, backend: Backend, request: bytes, context: aio.ServicerContext) -> bytes:
        backend.outstanding += 1
        try:
            response: bytes = await self._upstream_for(backend.grpc_url).infer(
                request, timeout=self._timeout(context)
            )
            return response
        finally:
            backend.outstanding -= 1

    def _timeout(self, context: aio.ServicerContext) -> float:
        """Our upstream timeout, or the client's deadline if sooner."""
        timeout = self.state.settings.upstream_timeout_s
        remaining = context.time_remaining()
        if remaining is not None and remaining < timeout:
            timeout = max(remaining, 0.001)
        return timeout

    def _upstream_for(self, target: str) -> _Upstream:
        upstream = self._upstreams.get(target)
        if upstream is None:
            upstream = self._upstreams[target] = _Upstream(target)
        return upstream

    async def _call(
        self, method: Any, request: Any, context: aio.ServicerContext, resolved: Resolved | None
    ) -> Any:
        """Call Triton within our timeout (or the client's deadline if sooner); map its errors."""
        timeout = self._timeout(context)
        try:
            return await method(request, timeout=timeout)
        except aio.AioRpcError as exc:
            raise upstream_failure(exc, resolved, timeout) from None


def _unreached(exc: aio.AioRpcError, resolved: Resolved) -> bool:
    """Whether a call failed to reach Triton (refused, reset) rather than Triton answering an error."""
    return exc.code() == Code.UNAVAILABLE and resolved.triton_name not in (exc.details() or "")


def _hide_internal_name(message: Any, resolved: Resolved) -> Any:
    """A metadata message with the internal name replaced everywhere (name, instance groups, ...)."""
    text = text_format.MessageToString(message)
    return text_format.Parse(text.replace(resolved.triton_name, resolved.model), type(message)())


def _rewrite_response(response: bytes, resolved: Resolved) -> bytes:
    """Triton's ModelInferResponse with the client's model name and our version number."""
    head = protowire.read_head(response)
    if head is not None:
        return protowire.replace_head(response, _head(resolved.model, str(resolved.version)), head.body)
    parsed = pb.ModelInferResponse.FromString(response)
    parsed.model_name, parsed.model_version = resolved.model, str(resolved.version)
    data: bytes = parsed.SerializeToString()
    return data
