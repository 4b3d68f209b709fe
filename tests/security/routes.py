"""What the isolation suite covers, generated: the app's route table, data-plane paths, the gRPC service.

A route added to the app (or a method to Triton's gRPC service) is covered without editing the suite; one
that needs a request body it cannot guess makes the suite fail until an example body is added.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from tritonclient.grpc import service_pb2 as pb

# Documentation and health probes: open by design, they carry no tenant's data.
PUBLIC_PATHS = frozenset(
    {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/v2/health/live", "/v2/health/ready"}
)
# gRPC liveness/readiness answer without a key, like Triton's (stock clients probe them before anything).
PUBLIC_GRPC = frozenset({"ServerLive", "ServerReady"})
# Path and query parameters that name a resource; each is tried with tenant A's value and a missing one.
RESOURCE_PARAMS = ("tenant", "model", "number", "alias", "key_id", "version", "instance")
# Headers that name a resource on the data plane (X-Tenant is for admins; a tenant key must not use it).
RESOURCE_HEADERS = {"tenant": "X-Tenant", "alias": "X-Model-Alias"}
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class HttpRoute:
    """One method on one path, and the kind of route it is.

    kinds: `tenant` (a tenant in the path), `global` (no tenant in the path: admin-only, or a listing
    filtered to the caller), `inference` (the data plane: the tenant comes from the key), `private`
    (operator-only data such as /metrics: no tenant key may read it).
    """

    method: str
    path: str
    name: str
    kind: str
    params: tuple[str, ...]
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        """`METHOD /path`, the case id."""
        return f"{self.method} {self.path}"

    @property
    def resources(self) -> tuple[str, ...]:
        """Every resource parameter the route takes: path, query, headers."""
        return self.params + self.query + self.headers


def _route_contexts(app: FastAPI) -> Iterator[Any]:
    """The app's routes with included routers flattened (FastAPI >= 0.16x includes routers lazily)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: app.routes is already flat
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def app_routes(app: FastAPI) -> list[HttpRoute]:
    """Every method of every non-public route in the app's route table."""
    routes = []
    for context in _route_contexts(app):
        path = context.path
        if path is None or path in PUBLIC_PATHS:
            continue
        original = getattr(context, "original_route", context)
        query: tuple[str, ...] = ()
        if isinstance(original, APIRoute):
            names = {p.alias for p in original.dependant.query_params}
            query = tuple(p for p in RESOURCE_PARAMS if p in names)
        params = tuple(p for p in RESOURCE_PARAMS if "{" + p + "}" in path)
        kind = "tenant" if "tenant" in params else "global"
        for method in sorted((context.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append(HttpRoute(method, path, context.name or path, kind, params, query))
    return routes


def _inference(method: str, path: str) -> HttpRoute:
    params = tuple(p for p in RESOURCE_PARAMS if "{" + p + "}" in path)
    # An explicit version wins over the alias, so the alias header is only a resource without one.
    headers = ("tenant",) if "version" in params else ("tenant", "alias")
    return HttpRoute(
        method, path, "infer" if method == "POST" else "inference", "inference", params, (), headers
    )


# The data plane serves these in front of the app (they are not in its route table).
DATA_PLANE_ROUTES = [
    _inference("POST", "/v1/predict/{model}"),
    *(
        _inference(method, f"/v2/models/{{model}}{version}{action}")
        for version in ("", "/versions/{version}")
        for method, action in (("GET", ""), ("GET", "/ready"), ("GET", "/config"), ("POST", "/infer"))
    ),
    HttpRoute("GET", "/v2", "server_metadata", "global", ()),
    HttpRoute("GET", "/metrics", "metrics", "private", ()),
]


@dataclass(frozen=True)
class GrpcMethod:
    """One method of inference.GRPCInferenceService and its message types."""

    name: str
    request: Any
    response: Any
    streaming: bool

    @property
    def path(self) -> str:
        """The method's HTTP/2 path."""
        return f"/inference.GRPCInferenceService/{self.name}"

    @property
    def model_field(self) -> str | None:
        """The request field naming a model, if any."""
        fields = {f.name for f in self.request.DESCRIPTOR.fields}
        return next((f for f in ("model_name", "name") if f in fields), None)

    @property
    def version_field(self) -> str | None:
        """The request field naming a version, if any."""
        fields = {f.name for f in self.request.DESCRIPTOR.fields}
        return next((f for f in ("model_version", "version") if f in fields), None)


def grpc_methods() -> list[GrpcMethod]:
    """Every non-public method of the KServe v2 gRPC service, from its descriptor."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    return [
        GrpcMethod(
            name=m.name,
            request=getattr(pb, m.input_type.name),
            response=getattr(pb, m.output_type.name),
            streaming=m.client_streaming or m.server_streaming,
        )
        for m in service.methods
        if m.name not in PUBLIC_GRPC
    ]
