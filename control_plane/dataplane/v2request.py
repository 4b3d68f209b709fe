"""Check a KServe v2 HTTP infer request (JSON or binary-tensor extension) and re-serialize its header.

Triton's JSON parser keeps the first of duplicated keys and ours the last, so what is forwarded is
the header as we parsed and checked it, never the client's bytes. Tensor data is counted, not
decoded: JSON values by type in C (`map(type, ...)`), binary data by its declared size. Standard
library and orjson only: large bodies are checked in worker processes (see `heavy`).
"""

from __future__ import annotations

import gc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import chain
from typing import Any

import orjson

from control_plane.dataplane.contract import (
    INLINE_BYTES_ELEMENTS,
    ITEM_SIZES,
    Contract,
    Rejected,
    bytes_elements,
    check_parameters,
    check_shape,
)

_NUMBERS = frozenset({int, float})
_LEAVES: dict[str, frozenset[type]] = {
    "BOOL": frozenset({bool}),
    "BYTES": frozenset({str}),
    **{dt: frozenset({int}) for dt in ("UINT8", "UINT16", "UINT32", "UINT64")},
    **{dt: frozenset({int}) for dt in ("INT8", "INT16", "INT32", "INT64")},
    **{dt: _NUMBERS for dt in ("FP16", "BF16", "FP32", "FP64")},
}
_INT_RANGES = {
    f"{kind}{bits}": (0, (1 << bits) - 1) if kind == "UINT" else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    for kind in ("UINT", "INT")
    for bits in (8, 16, 32, 64)
}
ENCODINGS = frozenset({"gzip", "deflate", "x-gzip"})
Prepared = tuple[bytes, int | None]  # the body to forward, and its Inference-Header-Content-Length


def prepare_http(
    body: bytes, encoding: str | None, header_length: bytes | str | None, contract: Contract, limit: int
) -> Prepared:
    """A KServe v2 infer body, decompressed, checked and with its JSON header re-serialized."""
    if encoding is not None:
        body = decompress(body, encoding, limit=limit)
    return prepare(body, header_length=header_length_of(header_length, len(body)), contract=contract)


def header_length_of(value: bytes | str | None, body_size: int) -> int | None:
    """`Inference-Header-Content-Length` as a number within the body; None when absent."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or not 0 < int(value) <= body_size:
        shown = value.decode("latin-1") if isinstance(value, bytes) else value
        raise Rejected(f"Inference-Header-Content-Length {shown!r} is not a length within the body")
    return int(value)


def decompress(body: bytes, encoding: str, *, limit: int, max_members: int | None = None) -> bytes:
    """The body without its Content-Encoding (gzip or deflate), refused (413) past `limit` decompressed
    bytes or past `max_members` gzip members (each costs a decompressor: thousands of empty ones in a
    small body take as long as megabytes of data)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ENCODINGS:
        raise Rejected(f"Content-Encoding '{encoding}' is not supported; use gzip or deflate", status=415)
    wbits = 47 if encoding != "deflate" else 15  # 47: gzip or zlib header, detected
    parts: list[bytes] = []
    size, rest = 0, body
    too_big = f"request body is over the limit of {limit} bytes once decompressed"
    try:
        while rest:  # gzip may hold several members, one after another
            if max_members is not None and len(parts) >= max_members:
                raise Rejected(f"the {encoding} body holds more than {max_members} members", status=413)
            inflater = zlib.decompressobj(wbits)
            part = inflater.decompress(rest, limit + 1 - size)
            size += len(part)
            if size > limit or inflater.unconsumed_tail:
                raise Rejected(too_big, status=413)
            if not inflater.eof:
                raise Rejected(f"the {encoding} body is truncated")
            parts.append(part)
            rest = inflater.unused_data
    except zlib.error as exc:
        raise Rejected(f"the body is not valid {encoding} data: {exc}") from exc
    return b"".join(parts)


GC_PAUSE_BYTES = 16384  # smaller bodies are checked with the collector running (a pause costs ~1 us)


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a request's JSON is read and checked.

    Parsed JSON holds no cycles (reference counting frees it), but its lists and objects count as
    allocations: a [1, 224, 224, 3] image sent as nested rows (50k lists) set off collections that
    walk the whole heap, half of its 50 ms check.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def prepare(
    body: bytes, *, header_length: int | None, contract: Contract, inline: bool = False
) -> tuple[bytes, int | None]:
    """The body to forward and its new header length (None for plain JSON); Rejected if invalid.
    `inline` (on the event loop): CheckLater past INLINE_BYTES_ELEMENTS elements of a binary BYTES input."""
    elements_limit = INLINE_BYTES_ELEMENTS if inline else None
    if len(body) <= GC_PAUSE_BYTES:  # too few lists to set off a collection: not worth the pause's cost
        return _prepare(body, header_length, contract, elements_limit)
    with paused_gc():
        return _prepare(body, header_length, contract, elements_limit)


def _prepare(
    body: bytes, header_length: int | None, contract: Contract, elements_limit: int | None
) -> tuple[bytes, int | None]:
    view = memoryview(body)
    end = len(body) if header_length is None else header_length
    try:
        document = orjson.loads(body if header_length is None else view[:end])
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"the request is not valid JSON (or nests too deeply): {exc}") from None
    if not isinstance(document, dict):
        raise Rejected('the request must be a JSON object with "inputs"')
    tail = view[end:]
    used = _check_inputs(document.get("inputs"), tail, contract, elements_limit)
    if used != len(tail):
        raise Rejected(f"the binary data is {len(tail)} bytes but the inputs declare {used}")
    outputs = _check_outputs(document.get("outputs"))
    check_parameters(document.get("parameters"))
    contract.check_names([i["name"] for i in document["inputs"]], outputs)
    try:
        head = orjson.dumps(document)
    except TypeError:  # nested past the 254 levels orjson writes (it reads 1024): a tensor's parameters
        raise _too_deep(document) from None
    if header_length is None:
        return head, None
    return head + tail, len(head)


def _too_deep(document: dict[str, Any]) -> Rejected:
    """Which input or output nests too deeply to be forwarded (the rest of the request was checked)."""
    for kind in ("input", "output"):
        for tensor in document.get(f"{kind}s") or ():
            try:
                orjson.dumps(tensor)
            except TypeError:
                return Rejected(f"{kind} '{tensor['name']}' nests too deeply (over 250 levels of JSON)")
    return Rejected("the request nests too deeply (over 250 levels of JSON)")


def _check_inputs(inputs: Any, tail: memoryview, contract: Contract, elements_limit: int | None) -> int:
    if not isinstance(inputs, list) or not inputs:
        raise Rejected(
            f'the request needs "inputs": a list of tensors; the model takes {contract.expected()}'
        )
    offset = 0
    for index, tensor in enumerate(inputs):
        name = tensor.get("name") if type(tensor) is dict else None
        if type(name) is not str:
            raise Rejected(f"input #{index} needs a 'name'")
        datatype = tensor.get("datatype")
        if type(datatype) is not str or datatype not in ITEM_SIZES:
            raise Rejected(f"input '{name}' has an unknown datatype {datatype!r}")
        shape = check_shape(name, tensor.get("shape"))
        elements = contract.check_input(name, datatype, shape)
        parameters = tensor.get("parameters")
        size = (
            None
            if parameters is None
            else check_parameters(parameters, "input", name).get("binary_data_size")
        )
        if size is None:
            found = json_values(tensor.get("data"), name, datatype, depth=len(shape) or 1)
        else:
            found = _binary_elements(size, tail, offset, name, datatype, "data" in tensor, elements_limit)
            offset += size  # type: ignore[operator]
            if elements_limit is not None and datatype == "BYTES":  # one budget for all the inputs
                elements_limit -= found
        if found != elements:
            raise Rejected(f"input '{name}' has shape {shape}, which needs {elements} values; it has {found}")
    return offset


def _binary_elements(
    size: object, tail: memoryview, offset: int, name: str, datatype: str, data: bool, limit: int | None
) -> int:
    if type(size) is not int or size < 0:
        raise Rejected(f"input '{name}' has an invalid binary_data_size {size!r}")
    if data:
        raise Rejected(f"input '{name}' has both 'data' and binary_data_size")
    if offset + size > len(tail):
        raise Rejected(f"input '{name}' declares {size} binary bytes but the body ends before them")
    item = ITEM_SIZES[datatype]
    if item == 0:
        return bytes_elements(tail[offset : offset + size], name, limit)
    if size % item:
        raise Rejected(f"input '{name}' has {size} binary bytes, not a whole number of {datatype} values")
    return size // item


def json_values(data: Any, name: str, datatype: str, *, depth: int) -> int:
    """How many values a (nested, at most `depth` deep) JSON list holds, all of the datatype's kind.

    Counted a level at a time in C (`map(type, ...)`, `chain.from_iterable`), never a Python call per
    list: a body of many small nested lists (`[[[[1]]]]` rows of a rank-8 tensor) costs its parse, not
    a Python frame per list.
    """
    if type(data) is not list:
        raise Rejected(f"input '{name}' needs 'data' (a list of values) or binary data")
    leaves = _LEAVES[datatype]
    level: list[Any] = data
    for remaining in range(depth, 0, -1):
        kinds = set(map(type, level))
        if kinds <= leaves:
            break
        if kinds == {list} and remaining > 1:
            level = list(chain.from_iterable(level))
            continue
        if list in kinds:
            raise Rejected(f"input '{name}' has 'data' nested deeper than its shape, or ragged")
        wrong = sorted(kind.__name__ for kind in kinds - leaves - {list})
        found = ", ".join(wrong)
        raise Rejected(f"input '{name}' has {found} values in 'data'; {datatype} needs {_kind(leaves)}")
    limits = _INT_RANGES.get(datatype)
    if limits is not None and level and type(level[0]) is int:  # integers: a range check in C
        low, high = min(level), max(level)
        if low < limits[0] or high > limits[1]:
            raise Rejected(f"input '{name}' has values outside the range of {datatype}")
    return len(level)


def _check_outputs(outputs: Any) -> list[str]:
    if outputs is None:
        return []
    if not isinstance(outputs, list):
        raise Rejected("'outputs' must be a list")
    names = []
    for index, output in enumerate(outputs):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise Rejected(f"output #{index} needs a 'name'")
        check_parameters(output.get("parameters"), "output", output["name"])
        names.append(output["name"])
    return names


def _kind(leaves: frozenset[type]) -> str:
    if leaves == _NUMBERS:
        return "numbers"
    return {bool: "true/false", str: "strings", int: "integers"}[next(iter(leaves))]
