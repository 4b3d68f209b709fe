"""Decode KServe v2 infer responses (JSON or Triton's binary-tensor extension) into numpy arrays.

The hot path never decodes tensors; this is for work done after the response is sent, such as
comparing a shadow version's outputs with the live ones.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from control_plane.dataplane.contract import NUMPY_NAMES

Array = npt.NDArray[Any]
Datatype = str  # a KServe datatype name (a key of NUMPY_NAMES); this module stays light for workers
_LENGTH = struct.Struct("<I")


def decode_infer_response(body: bytes, *, header_length: int | None) -> dict[str, Array]:
    """Outputs of an infer response by name, with their datatype and shape; ValueError when malformed.

    `header_length` is the `Inference-Header-Content-Length` of a binary-extension response (None for
    plain JSON). BYTES tensors decode to object arrays of `bytes`; BF16 decodes to float32.
    """
    if header_length is not None and not 0 <= header_length <= len(body):
        raise ValueError(f"header length {header_length} is outside a body of {len(body)} bytes")
    json_end = len(body) if header_length is None else header_length
    view = memoryview(body)
    try:
        document = orjson.loads(view[:json_end])
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"the response header is not valid JSON: {exc}") from exc
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list):
        raise ValueError("the response has no 'outputs' list")
    decoded: dict[str, Array] = {}
    offset = json_end
    for index, output in enumerate(outputs):
        name, datatype, shape = _describe(output, index)
        if name in decoded:
            raise ValueError(f"output '{name}' appears more than once")
        size = _binary_size(output, name)
        if size is None:
            decoded[name] = _from_json(output.get("data"), datatype, shape, name)
            continue
        if offset + size > len(body):
            raise ValueError(f"output '{name}' declares {size} binary bytes but the body ends before them")
        decoded[name] = _from_binary(view[offset : offset + size], datatype, shape, name)
        offset += size
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes after the last binary output are unaccounted for")
    return decoded


def _describe(output: Any, index: int) -> tuple[str, Datatype, tuple[int, ...]]:
    if not isinstance(output, dict):
        raise ValueError(f"output #{index} is not an object")
    name, datatype, shape = output.get("name"), output.get("datatype"), output.get("shape")
    if not isinstance(name, str):
        raise ValueError(f"output #{index} has no name")
    if datatype not in NUMPY_NAMES:
        raise ValueError(f"output '{name}' has unknown datatype {datatype!r}")
    if not isinstance(shape, list) or not all(_is_dim(dim) for dim in shape):
        raise ValueError(f"output '{name}' has invalid shape {shape!r}")
    return name, datatype, tuple(shape)


def _is_dim(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def _binary_size(output: dict[str, Any], name: str) -> int | None:
    parameters = output.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise ValueError(f"output '{name}' has parameters that are not an object")
    size = parameters.get("binary_data_size")
    if size is not None and not _is_dim(size):
        raise ValueError(f"output '{name}' has invalid binary_data_size {size!r}")
    return size


def _from_json(data: Any, datatype: Datatype, shape: tuple[int, ...], name: str) -> Array:
    if not isinstance(data, list):
        raise ValueError(f"output '{name}' has neither a 'data' list nor binary data")
    if datatype == "BYTES":
        items = [_as_bytes(item, name) for item in _flatten(data)]
        return _shaped(_bytes_array(items), shape, name)
    return _shaped(_numbers(data, datatype, name), shape, name)


def _numbers(data: list[Any], datatype: Datatype, name: str) -> Array:
    try:
        values = np.asarray(data).reshape(-1)
    except ValueError as exc:  # ragged nesting
        raise ValueError(f"output '{name}' has data that is not a {datatype} tensor: {exc}") from exc
    if values.size and values.dtype.kind not in ("b" if datatype == "BOOL" else "biuf"):
        raise ValueError(f"output '{name}' has data that is not a {datatype} tensor: {values.dtype} values")
    dtype = _element_dtype(datatype)
    with np.errstate(all="ignore"):
        array = values.astype(dtype)
    if dtype.kind in "iu" and not np.array_equal(array, values):
        raise ValueError(f"output '{name}' has values that do not fit {datatype}")
    return array


def _from_binary(raw: memoryview, datatype: Datatype, shape: tuple[int, ...], name: str) -> Array:
    if datatype == "BYTES":
        return _shaped(_length_prefixed(raw, name), shape, name)
    if datatype == "BF16":
        if len(raw) % 2:
            raise ValueError(f"output '{name}' has {len(raw)} binary bytes, not a whole number of BF16")
        # bfloat16 is the upper half of a float32: widen exactly instead of depending on ml_dtypes.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return _shaped(bits.view(np.float32), shape, name)
    dtype = _element_dtype(datatype)
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"output '{name}' has {len(raw)} binary bytes; shape {list(shape)} needs {expected}")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype, copy=False).reshape(shape)


def _length_prefixed(raw: memoryview, name: str) -> Array:
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ValueError(f"BYTES output '{name}' ends inside an element's length prefix")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise ValueError(f"BYTES output '{name}' has an element of {length} bytes past its end")
        items.append(bytes(raw[offset : offset + length]))
        offset += length
    return _bytes_array(items)


def _element_dtype(datatype: Datatype) -> np.dtype[Any]:
    return np.dtype(NUMPY_NAMES[datatype])  # BF16 values are held as float32


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _as_bytes(item: Any, name: str) -> bytes:
    if not isinstance(item, str):
        raise ValueError(f"BYTES output '{name}' has a non-string element {item!r}")
    return item.encode()


def _shaped(array: Array, shape: tuple[int, ...], name: str) -> Array:
    needed = math.prod(shape)
    if array.size != needed:
        raise ValueError(f"output '{name}' has {array.size} elements; shape {list(shape)} needs {needed}")
    return array.reshape(shape)


def _bytes_array(items: list[bytes]) -> Array:
    # np.array([]) would be float64: fill an object array of the right length instead.
    array: Array = np.empty(len(items), dtype=object)
    array[:] = items
    return array
