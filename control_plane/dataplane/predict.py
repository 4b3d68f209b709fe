"""`POST /v1/predict/{model}`: simple JSON in and out (`{"inputs": {"x": [[...]]}}`), via KServe v2."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from control_plane.dataplane.exchange import JSON, Reply
from control_plane.dataplane.infer import check_limits, forward
from control_plane.dataplane.requests import Call, read_body
from control_plane.dataplane.upstream import triton_error
from control_plane.errors import BadRequest
from control_plane.modelconfig.specs import numpy_dtype
from control_plane.state import AppState


def to_v2_request(body: bytes, *, inputs: tuple[tuple[str, str], ...]) -> bytes:
    """`{"inputs": {name: nested list}}` -> a KServe v2 JSON infer request with shapes and datatypes."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from exc
    given = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(given, dict):
        raise BadRequest('expected {"inputs": {"<name>": [...]}}')
    expected = dict(inputs)
    unknown = sorted(set(given) - set(expected))
    missing = sorted(set(expected) - set(given))
    if unknown or missing:
        raise BadRequest(f"inputs must be exactly {sorted(expected)}; unknown {unknown}, missing {missing}")
    tensors = [_tensor(name, given[name], expected[name]) for name in expected]
    return orjson.dumps({"inputs": tensors})


def _tensor(name: str, value: Any, datatype: str) -> dict[str, Any]:
    dtype = numpy_dtype(datatype)  # type: ignore[arg-type]
    try:
        array = np.asarray(value, dtype=dtype if dtype is not None else object)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input '{name}' is not a rectangular array of {datatype}: {exc}") from exc
    data = array.reshape(-1).tolist()
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data}


def from_v2_response(body: bytes) -> dict[str, Any]:
    """Outputs of a KServe v2 JSON response as nested lists by name."""
    outputs = orjson.loads(body).get("outputs", [])
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]).tolist() for o in outputs}


async def handle(state: AppState, call: Call) -> None:
    """Convert, forward to Triton, convert back."""
    resolved = call.ex.resolved
    assert resolved is not None
    check_limits(state, call.ex)
    body = await read_body(call, limit=state.settings.max_request_bytes)
    request = to_v2_request(body, inputs=resolved.inputs)
    upstream = await forward(state, call.ex, body=request, headers=[(b"content-type", b"application/json")])
    if upstream.status != 200:
        raise triton_error(upstream, resolved)
    document = {
        "model": resolved.model,
        "version": resolved.version,
        "outputs": from_v2_response(upstream.body),
    }
    await call.respond(Reply(200, JSON, orjson.dumps(document)))
