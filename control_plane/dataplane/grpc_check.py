"""Check a gRPC ModelInferRequest against its version, walking the wire without copying tensor bytes.

Top-level fields are walked with `protowire`; the small per-tensor messages (name, datatype, shape,
parameters, typed contents) are parsed by protobuf; `raw_input_contents` are only measured.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2 as pb

from control_plane.dataplane import protowire
from control_plane.dataplane.contract import (
    ITEM_SIZES,
    SHARED_MEMORY_KEYS,
    Contract,
    Rejected,
    bytes_elements,
)

_PARAMETERS, _INPUTS, _OUTPUTS, _RAW = 4, 5, 6, 7
_CONTENTS = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip
_ALL_CONTENTS = frozenset(_CONTENTS.values())
_Input = pb.ModelInferRequest.InferInputTensor
_Output = pb.ModelInferRequest.InferRequestedOutputTensor
_ParameterEntry = _Input.ParametersEntry


def check_infer_request(request: bytes, contract: Contract) -> None:
    """Rejected unless every input and output of the request fits the version's contract."""
    inputs: list[Any] = []
    outputs: list[str] = []
    raw: list[tuple[int, int]] = []  # (start, end) of each raw_input_contents entry
    view = memoryview(request)
    for number, start, end in _fields(request):
        if number == _INPUTS:
            inputs.append(_Input.FromString(view[start:end]))
        elif number == _OUTPUTS:
            output = _Output.FromString(view[start:end])
            _check_parameters(f"output '{output.name}'", output.parameters)
            outputs.append(output.name)
        elif number == _RAW:
            raw.append((start, end))
        elif number == _PARAMETERS and _ParameterEntry.FromString(view[start:end]).key in SHARED_MEMORY_KEYS:
            raise Rejected("shared memory is not available through this endpoint; send the data")
    if not inputs:
        raise Rejected(f"the request has no inputs; the model takes {contract.expected()}")
    if raw and len(raw) != len(inputs):
        raise Rejected(f"the request has {len(inputs)} inputs but {len(raw)} raw_input_contents")
    for index, tensor in enumerate(inputs):
        _check_input(tensor, contract, view[raw[index][0] : raw[index][1]] if raw else None)
    contract.check_names([tensor.name for tensor in inputs], outputs)


def _check_input(tensor: Any, contract: Contract, raw: memoryview | None) -> None:
    name, datatype = tensor.name, tensor.datatype
    if datatype not in ITEM_SIZES:
        raise Rejected(f"input '{name}' has an unknown datatype {datatype!r}")
    shape = list(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise Rejected(f"input '{name}' has a negative dimension in shape {shape}")
    elements = contract.check_input(name, datatype, shape)
    _check_parameters(f"input '{name}'", tensor.parameters)
    used = [field for field in _ALL_CONTENTS if len(getattr(tensor.contents, field))]
    if raw is not None:
        if used:
            raise Rejected(f"input '{name}' has both contents and raw_input_contents")
        found = _raw_elements(raw, name, datatype)
    else:
        expected = _CONTENTS.get(datatype)
        if expected is None:
            raise Rejected(f"input '{name}' of datatype {datatype} must be sent in raw_input_contents")
        if any(field != expected for field in used):
            raise Rejected(f"input '{name}' of datatype {datatype} belongs in contents.{expected}")
        found = len(getattr(tensor.contents, expected))
    if found != elements:
        raise Rejected(f"input '{name}' has shape {shape}, which needs {elements} values; it has {found}")


def _raw_elements(raw: memoryview, name: str, datatype: str) -> int:
    item = ITEM_SIZES[datatype]
    if item == 0:
        return bytes_elements(raw, name)
    if len(raw) % item:
        raise Rejected(f"input '{name}' has {len(raw)} raw bytes, not a whole number of {datatype} values")
    return len(raw) // item


def _check_parameters(where: str, parameters: Any) -> None:
    if not SHARED_MEMORY_KEYS.isdisjoint(parameters.keys()):
        raise Rejected(f"{where}: shared memory is not available through this endpoint; send the data")


def _fields(buf: bytes) -> list[tuple[int, int, int]]:
    """(field number, payload start, payload end) of the length-delimited top-level fields 4 to 7."""
    found = []
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = protowire.read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise protowire.WireError("field number 0")
        if wire == protowire.WIRE_LEN:
            length, start = protowire.read_varint(buf, pos)
            pos = start + length
            if pos > end:
                raise protowire.WireError("truncated field")
            if _PARAMETERS <= number <= _RAW:
                found.append((number, start, pos))
        else:
            pos = protowire.skip_field(buf, pos, wire)
    return found
