"""`/v1/predict` bodies to and from KServe v2, with the typed checks a JSON caller cannot do itself.

`{"inputs": {"x": [[1, 2, 3, 4]]}}` becomes a binary-tensor request of the model's datatypes, refusing
what would silently change a value: 1.5 or 2**40 into INT32, true into FP32, 1e39 into FP32.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from control_plane.dataplane.contract import NUMPY_NAMES, CheckLater, Contract, Rejected
from control_plane.dataplane.decode import decode_infer_response
from control_plane.dataplane.v2request import decompress, json_values, paused_gc

Array = npt.NDArray[Any]
# What JSON values are read as first, wide enough to check ranges: by the datatype's first letters.
_WIDE: dict[str, type] = {
    "BO": bool,
    "BY": object,
    "BF": np.float64,
    "FP": np.float64,
    "IN": np.int64,
    "UI": np.uint64,
}


def to_v2_request(
    body: bytes,
    contract: Contract,
    encoding: str | None = None,
    limit: int = 1 << 26,
    strings_limit: int | None = None,
) -> tuple[bytes, int]:
    """A KServe v2 binary-tensor request (body, header length) for `{"inputs": {name: nested list}}`;
    CheckLater past `strings_limit` elements of a BYTES input (each is checked and encoded in Python)."""
    if encoding is not None:
        body = decompress(body, encoding, limit=limit)
    with paused_gc():
        return _to_v2_request(body, contract, strings_limit)


def _to_v2_request(body: bytes, contract: Contract, strings_limit: int | None) -> tuple[bytes, int]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"the body is not valid JSON (or nests too deeply): {exc}") from None
    given = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(given, dict) or not given:
        raise Rejected(
            f'expected {{"inputs": {{"<input name>": [...]}}}}; the model takes {contract.expected()}'
        )
    others = sorted(str(key) for key in document if key != "inputs")
    if others:  # {"inputs": ..., "version": 2} served the alias' version, as if asked for
        raise Rejected(
            f'unknown field {others[0]!r}: /v1/predict takes only "inputs" (a version: '
            "POST /v2/models/{model}/versions/{n}/infer; another alias: the X-Model-Alias header)"
        )
    headers, blobs = [], []
    for name, value in given.items():
        rule = contract.inputs.get(name)
        if rule is None:
            contract.check_input(name, "", [])  # raises: unknown input, naming the model's inputs
            continue
        array = typed_array(name, value, rule.datatype, strings_limit)
        if array.ndim == 0 and rule.dims == (1,):
            array = array.reshape(1)  # a model's 0-d input is [1] in Triton's config
        contract.check_input(name, rule.datatype, list(array.shape))
        blob = _to_bytes(array, rule.datatype)
        headers.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": rule.datatype,
                "parameters": {"binary_data_size": len(blob)},
            }
        )
        blobs.append(blob)
    contract.check_names(list(given), ())
    outputs = [{"name": name, "parameters": {"binary_data": True}} for name in sorted(contract.outputs)]
    head = orjson.dumps({"inputs": headers, "outputs": outputs})
    return b"".join((head, *blobs)), len(head)


def typed_array(name: str, value: Any, datatype: str, strings_limit: int | None = None) -> Array:
    """`value` as an array of `datatype`; Rejected if that would lose or change a value, CheckLater
    if it is BYTES of more than `strings_limit` elements."""
    json_values(value if isinstance(value, list) else [value], name, datatype, depth=32)  # kinds of values
    try:
        array: Array = np.asarray(value, dtype=_WIDE[datatype[:2]])
    except OverflowError:
        raise Rejected(f"input '{name}' has values outside the range of {datatype}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise Rejected(f"input '{name}' is not a rectangular array: {_first_line(exc)}") from None
    if datatype == "BYTES":
        if strings_limit is not None and array.size > strings_limit:
            raise CheckLater()
        return _strings(name, array)
    if datatype == "BOOL" or array.size == 0:
        return array.astype(NUMPY_NAMES[datatype])
    return _cast(name, array, datatype)


def _cast(name: str, array: Array, datatype: str) -> Array:
    target = np.dtype(NUMPY_NAMES[datatype])
    if target.kind in "iu":
        info = np.iinfo(target)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise Rejected(f"input '{name}' has values outside the range of {datatype}")
        return array.astype(target)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(target)
    if not np.isfinite(cast).all():  # JSON has no inf or nan: anything infinite overflowed
        raise Rejected(f"input '{name}' has values outside the range of {datatype}")
    return cast


def _strings(name: str, array: Array) -> Array:
    if not all(isinstance(item, str) for item in array.reshape(-1)):  # lists left: a ragged array
        raise Rejected(f"input '{name}' is not a rectangular array of strings")
    return array


def _to_bytes(array: Array, datatype: str) -> bytes:
    if datatype == "BYTES":
        encoded = [item.encode() for item in array.reshape(-1)]
        return b"".join(len(item).to_bytes(4, "little") + item for item in encoded)
    if datatype == "BF16":  # round to nearest even, keep the upper half of each float32
        bits = np.ascontiguousarray(array, dtype="<f4").view("<u4").astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype("<u2").tobytes()
    little = array.dtype.newbyteorder("<")
    return np.ascontiguousarray(array, dtype=little).tobytes()


def to_predict_response(body: bytes, header_length: int | None, model: str, version: int) -> bytes:
    """Triton's infer response as `{"model", "version", "outputs": {name: nested list}}`."""
    try:
        outputs = decode_infer_response(body, header_length=header_length)
    except ValueError as exc:
        raise Rejected(f"the inference server's answer could not be read: {exc}", status=502) from None
    if not outputs:
        raise Rejected("the inference server's answer could not be read: it has no outputs", status=502)
    document = {
        "model": model,
        "version": version,
        "outputs": {name: _listed(array) for name, array in outputs.items()},
    }
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _listed(array: Array) -> Any:
    if array.dtype == object:  # BYTES: text (invalid UTF-8 replaced)
        texts = [item.decode("utf-8", errors="replace") for item in array.reshape(-1)]
        return np.array(texts, dtype=object).reshape(array.shape).tolist()
    return array.tolist()


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200]
