"""Check a gRPC ModelInferRequest against its version, walking the wire without copying tensor bytes.

Top-level fields are walked once with `protowire` (the same walk finds the model's name); the small
per-tensor messages (name, datatype, shape, parameters, typed contents) are parsed by protobuf;
`raw_input_contents` are only measured.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2 as pb

from control_plane.dataplane import protowire
from control_plane.dataplane.contract import (
    INLINE_BYTES_ELEMENTS,
    ITEM_SIZES,
    MAX_RANK,
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


REQUEST_FIELDS = frozenset({_PARAMETERS, _INPUTS, _OUTPUTS, _RAW})  # the fields the check reads


def check_infer_request(request: bytes, contract: Contract) -> None:
    """Rejected unless every input and output of the request fits the version's contract."""
    walked = protowire.walk(request, keep=REQUEST_FIELDS)
    assert walked is not None  # no limit
    check_walked(request, walked, contract)


def check_large_request(request: bytes, contract: Contract, body: int) -> None:
    """`check_infer_request` for a request of many fields, checked in a worker process after it was
    resolved by the name and version leading it (`protowire.leading`, ending at `body`): refused
    unless those are its only fields 1 and 2, as every serializer writes them (a parser keeps the
    last, so another would name a different model than the one checked)."""
    walked = protowire.walk(request, keep=REQUEST_FIELDS)
    assert walked is not None
    if walked.head != body:
        raise Rejected(
            "model_name and model_version must lead the request, once each, as protobuf serializers "
            "write them (a request of this many fields is not read any other way)"
        )
    check_walked(request, walked, contract)


def inline_sized(walked: protowire.Walked, limit: int) -> bool:
    """Whether the request's typed fields (parameters, inputs with their shapes and contents, outputs:
    what protobuf parses and Python walks) are at most `limit` bytes; raw contents are only measured."""
    return sum(end - start for number, start, end in walked.spans if number != _RAW) <= limit


def check_walked(
    request: bytes, walked: protowire.Walked, contract: Contract, *, inline: bool = False
) -> None:
    """`check_infer_request` of a request already walked; `inline` (on the event loop): CheckLater past
    INLINE_BYTES_ELEMENTS elements of raw BYTES inputs, all inputs together."""
    limit = INLINE_BYTES_ELEMENTS if inline else None
    inputs: list[Any] = []
    outputs: list[str] = []
    raw: list[tuple[int, int]] = []  # (start, end) of each raw_input_contents entry
    view = memoryview(request)
    for number, start, end in walked.spans:
        if number == _INPUTS:
            inputs.append(_Input.FromString(view[start:end]))
        elif number == _OUTPUTS:
            output = _Output.FromString(view[start:end])
            _check_parameters(f"output '{output.name}'", output.parameters)
            outputs.append(output.name)
        elif number == _RAW:
            raw.append((start, end))
        elif _ParameterEntry.FromString(view[start:end]).key in SHARED_MEMORY_KEYS:  # _PARAMETERS
            raise Rejected("shared memory is not available through this endpoint; send the data")
    if not inputs:
        raise Rejected(f"the request has no inputs; the model takes {contract.expected()}")
    if raw and len(raw) != len(inputs):
        raise Rejected(f"the request has {len(inputs)} inputs but {len(raw)} raw_input_contents")
    contract.check_names([tensor.name for tensor in inputs], outputs)  # before counting: no repeats
    for index, tensor in enumerate(inputs):
        found = _check_input(tensor, contract, view[raw[index][0] : raw[index][1]] if raw else None, limit)
        if limit is not None and tensor.datatype == "BYTES":
            limit -= found


def _check_input(tensor: Any, contract: Contract, raw: memoryview | None, limit: int | None) -> int:
    """The input's element count, checked against the version's contract."""
    name, datatype = tensor.name, tensor.datatype
    if datatype not in ITEM_SIZES:
        raise Rejected(f"input '{name}' has an unknown datatype {datatype!r}")
    if len(tensor.shape) > MAX_RANK:
        raise Rejected(f"input '{name}' has a shape of {len(tensor.shape)} dimensions; at most {MAX_RANK}")
    shape = list(tensor.shape)
    if any(dim < 0 for dim in shape):
        raise Rejected(f"input '{name}' has a negative dimension in shape {shape}")
    elements = contract.check_input(name, datatype, shape)
    _check_parameters(f"input '{name}'", tensor.parameters)
    used = [field for field in _ALL_CONTENTS if len(getattr(tensor.contents, field))]
    if raw is not None:
        if used:
            raise Rejected(f"input '{name}' has both contents and raw_input_contents")
        found = _raw_elements(raw, name, datatype, limit)
    else:
        expected = _CONTENTS.get(datatype)
        if expected is None:
            raise Rejected(f"input '{name}' of datatype {datatype} must be sent in raw_input_contents")
        if any(field != expected for field in used):
            raise Rejected(f"input '{name}' of datatype {datatype} belongs in contents.{expected}")
        found = len(getattr(tensor.contents, expected))
    if found != elements:
        raise Rejected(f"input '{name}' has shape {shape}, which needs {elements} values; it has {found}")
    return found


def _raw_elements(raw: memoryview, name: str, datatype: str, limit: int | None) -> int:
    item = ITEM_SIZES[datatype]
    if item == 0:
        return bytes_elements(raw, name, limit)
    if len(raw) % item:
        raise Rejected(f"input '{name}' has {len(raw)} raw bytes, not a whole number of {datatype} values")
    return len(raw) // item


def _check_parameters(where: str, parameters: Any) -> None:
    if not SHARED_MEMORY_KEYS.isdisjoint(parameters.keys()):
        raise Rejected(f"{where}: shared memory is not available through this endpoint; send the data")
