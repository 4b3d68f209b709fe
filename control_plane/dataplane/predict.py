"""`POST /v1/predict/{model}`: simple JSON in and out (`{"inputs": {"x": [[...]]}}`), via KServe v2."""

from __future__ import annotations

from control_plane.dataplane.exchange import JSON, Reply
from control_plane.dataplane.infer import check_limits, forward
from control_plane.dataplane.requests import Call, read_body, watching_for_hangup
from control_plane.dataplane.upstream import BadGateway, triton_error
from control_plane.state import AppState


async def handle(state: AppState, call: Call) -> None:
    """Convert (checked and typed), forward to Triton, convert back."""
    resolved = call.ex.resolved
    assert resolved is not None
    check_limits(state, call.ex)
    body = await read_body(call, limit=state.settings.max_request_bytes)
    request, header_length = await state.checks.predict_request(call.ex, body)
    headers = [(b"content-type", JSON), (b"inference-header-content-length", b"%d" % header_length)]
    async with watching_for_hangup(call):
        upstream = await forward(state, call.ex, body=request, headers=headers)
    if upstream.status != 200:
        raise triton_error(upstream, resolved)
    raw_length = upstream.headers.get(b"inference-header-content-length")
    if raw_length is not None and not raw_length.isdigit():
        raise BadGateway("the inference server's answer could not be read")
    length = int(raw_length) if raw_length is not None else None
    document = await state.checks.predict_response(call.ex, upstream.body, length)
    await call.respond(Reply(200, JSON, document))
