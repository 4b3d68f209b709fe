"""The inference hot path: authenticate, resolve, limit, forward untouched, rewrite the model name."""

from __future__ import annotations

from collections.abc import Sequence

from control_plane.dataplane.auth import authenticate
from control_plane.dataplane.exchange import JSON, Exchange, Reply
from control_plane.dataplane.rewrite import rewrite_infer_response
from control_plane.dataplane.upstream import UpstreamResponse, triton_error
from control_plane.state import AppState


def begin(state: AppState, ex: Exchange, *, model: str, version: int | None) -> None:
    """Authenticate the caller and resolve the model (no I/O: in-memory tables only)."""
    admin = state.settings.admin_token
    ex.caller = authenticate(
        state.router.table,
        authorization=ex.header(b"authorization"),
        tenant_header=ex.header(b"x-tenant"),
        admin_token=admin.get_secret_value() if admin is not None else None,
    )
    state.key_usage.touch(ex.caller.key_id)
    ex.resolved = state.router.resolve(
        tenant_id=ex.caller.tenant_id,
        model=model,
        alias=ex.header(b"x-model-alias"),
        version=version,
        routing_key=ex.header(b"x-routing-key"),
    )


def check_limits(state: AppState, ex: Exchange) -> None:
    """Rate limit before the body is read."""
    assert ex.caller is not None
    state.limits.check_rate(ex.caller.tenant_id)


async def forward(
    state: AppState, ex: Exchange, *, body: bytes, headers: Sequence[tuple[bytes, bytes]]
) -> UpstreamResponse:
    """POST an infer body to the resolved version, holding a tenant slot and counted as in flight."""
    resolved, caller = ex.resolved, ex.caller
    assert resolved is not None and caller is not None
    name = resolved.triton_name
    with state.limits.slot(caller.tenant_id):
        state.inflight[name] += 1  # the keep-warm janitor never unloads a version with requests in flight
        state.metrics.http_in_flight.inc()
        try:
            return await ex.timed(
                state.upstream.request(b"POST", f"/v2/models/{name}/infer", body=body, headers=headers)
            )
        finally:
            state.inflight[name] -= 1
            state.metrics.http_in_flight.dec()


async def infer(state: AppState, ex: Exchange, body: bytes) -> Reply:
    """Forward the body to Triton as is and rewrite only the model name and version in its answer."""
    resolved = ex.resolved
    assert resolved is not None
    name = resolved.triton_name
    upstream = await forward(state, ex, body=body, headers=ex.forward_headers())
    if upstream.status != 200:
        raise triton_error(upstream, resolved)
    raw_length = upstream.headers.get(b"inference-header-content-length")
    header_length = int(raw_length) if raw_length is not None else None
    head, tail, new_length = rewrite_infer_response(
        upstream.body,
        header_length=header_length,
        triton_name=name,
        model=resolved.model,
        version=resolved.version,
    )
    extra = [(b"inference-header-content-length", str(new_length).encode())] if new_length is not None else []
    reply = Reply(200, upstream.headers.get(b"content-type", JSON), head, tail, extra)
    if resolved.shadow is not None:

        def mirror() -> None:  # after the live response is out: never on its latency
            state.shadow.mirror(
                resolved=resolved,
                body=body,
                headers=ex.forward_headers(),
                live_body=upstream.body,
                live_header_length=header_length,
            )

        reply.after = mirror
    return reply


def observe(state: AppState, ex: Exchange, *, total_s: float, protocol: str = "http") -> None:
    """Record one finished request in the metrics."""
    resolved = ex.resolved
    if resolved is None:
        return
    state.metrics.observe(
        tenant=resolved.tenant,
        model=resolved.model,
        version=str(resolved.version),
        protocol=protocol,
        status=ex.status,
        total_s=total_s,
        upstream_s=ex.upstream_s,
    )
