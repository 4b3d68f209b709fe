"""KServe v2 bodies built in tests, as Triton writes them, and what our answers' headers say."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor


def build_response(outputs: list[tuple[str, np.ndarray, bool]]) -> tuple[bytes, int | None]:
    """A Triton-style infer response: each (name, array, binary?) as JSON data or binary bytes."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array, binary in outputs:
        entry: dict[str, Any] = {
            "name": name,
            "datatype": np_to_triton_dtype(array.dtype),
            "shape": list(array.shape),
        }
        if binary:
            raw = serialize_byte_tensor(array).item() if array.dtype == object else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            flat = array.reshape(-1).tolist()
            entry["data"] = [v.decode() for v in flat] if array.dtype == object else flat
        entries.append(entry)
    header = orjson.dumps({"model_name": "m", "model_version": "1", "outputs": entries})
    return header + b"".join(blobs), (len(header) if blobs else None)


def server_timing(header: str) -> dict[str, float]:
    """A Server-Timing header's entries that have a duration: name -> milliseconds."""
    entries = (part.strip().partition(";dur=") for part in header.split(","))
    return {name: float(value) for name, found, value in entries if found}


def trailing_timing(call: Any) -> dict[str, float]:
    """A finished gRPC call's (or RpcError's) `server-timing` trailing metadata, parsed as above."""
    return server_timing(dict(call.trailing_metadata())["server-timing"])
