"""Read a model's real signature from its artifact, and reconcile it with what the publisher declared."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto
from pydantic import ValidationError

from control_plane.modelconfig.exceptions import InvalidArtifact, InvalidModelSpec
from control_plane.modelconfig.specs import (
    Signature,
    TensorSpec,
    datatype_from_onnx,
)


def read_onnx_signature(path: Path) -> Signature:
    """Check an ONNX file and return its inputs (initializers excluded) and outputs."""
    try:
        # Path-based, so models over 2 GB (external data) are checked without loading them.
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        missing = _missing_external_data(path)
        if missing:
            raise InvalidArtifact(
                f"the model keeps its weights in external data files ({', '.join(missing)}) that were not "
                "uploaded; upload a zip or tar archive holding the .onnx file and those files beside it"
            ) from exc
        reason = str(exc).strip().replace(str(path.parent) + "/", "").replace(str(path), path.name)
        raise InvalidArtifact(f"onnx.checker: {reason}") from exc
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    if model.ir_version < 4:  # before IR 4 every initializer is also a graph input: weights, not inputs
        inputs = [_tensor_spec("input", value) for value in graph.input if value.name not in initializers]
    else:  # since IR 4 an input with an initializer is an input with a default value: optional
        inputs = [_tensor_spec("input", v, optional=v.name in initializers) for v in graph.input]
    zipmaps = {name for node in graph.node if node.op_type == "ZipMap" for name in node.output}
    outputs = [_tensor_spec("output", value, zipmap=value.name in zipmaps) for value in graph.output]
    if not inputs:
        raise InvalidArtifact("the ONNX graph has no inputs (every graph input is an initializer)")
    return _signature(inputs=inputs, outputs=outputs)


def _missing_external_data(path: Path) -> list[str]:
    """External data files the model names that are not beside it (empty if it does not parse)."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return []
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(name for name in locations if not (path.parent / name).is_file())


# ONNX's non-tensor value types, in the words of the refusal.
_NOT_TENSORS = {
    "sequence_type": "a sequence",
    "map_type": "a map",
    "optional_type": "an optional value",
    "sparse_tensor_type": "a sparse tensor",
}
_ZIPMAP_FIX = (
    ": it comes from a ZipMap operator, which skl2onnx adds to classifiers by default; convert the "
    "model with options={'zipmap': False} (skl2onnx.to_onnx or convert_sklearn) to get the probabilities "
    "as a tensor"
)


def _tensor_spec(
    kind: str, value: onnx.ValueInfoProto, *, optional: bool = False, zipmap: bool = False
) -> TensorSpec:
    if not value.type.HasField("tensor_type"):
        found = value.type.WhichOneof("value")
        what = _NOT_TENSORS.get(found, f"of type {found}") if found else "untyped"
        raise InvalidArtifact(
            f"{kind} '{value.name}' is {what}, not a tensor; Triton serves tensors only"
            + (_ZIPMAP_FIX if zipmap else "")
        )
    tensor = value.type.tensor_type
    datatype = datatype_from_onnx(tensor.elem_type)
    if datatype is None:
        raise InvalidArtifact(
            f"{kind} '{value.name}': dtype {_onnx_type_name(tensor.elem_type)} is not supported"
        )
    if not tensor.HasField("shape"):
        raise InvalidArtifact(f"{kind} '{value.name}': the model does not state its rank")
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim]
    try:
        return TensorSpec(name=value.name, datatype=datatype, shape=shape, optional=optional)
    except ValidationError as exc:
        raise InvalidArtifact(f"{kind} '{value.name}': {_first_error(exc)}") from exc


def _onnx_type_name(elem_type: int) -> str:
    try:
        return str(TensorProto.DataType.Name(elem_type))
    except ValueError:
        return f"#{elem_type}"


def _signature(*, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> Signature:
    try:
        return Signature(inputs=inputs, outputs=outputs)
    except ValidationError as exc:
        raise InvalidArtifact(_first_error(exc)) from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def check_declared(*, declared: Signature | None, actual: Signature) -> Signature:
    """The effective signature: the artifact's, with dynamic dims refined by the declaration if any."""
    if declared is None:
        return actual
    return Signature(
        inputs=_agree("input", declared=declared.inputs, actual=actual.inputs),
        outputs=_agree("output", declared=declared.outputs, actual=actual.outputs),
    )


def _agree(kind: str, *, declared: list[TensorSpec], actual: list[TensorSpec]) -> list[TensorSpec]:
    by_name = {tensor.name: tensor for tensor in declared}
    actual_names = [tensor.name for tensor in actual]
    for name in by_name:
        if name not in actual_names:
            raise InvalidModelSpec(
                f"{kind} '{name}' is declared but the model has no such {kind} "
                f"(model {kind}s: {', '.join(actual_names)})"
            )
    return [_agree_tensor(kind, declared=by_name.get(tensor.name), actual=tensor) for tensor in actual]


def _agree_tensor(kind: str, *, declared: TensorSpec | None, actual: TensorSpec) -> TensorSpec:
    where = f"{kind} '{actual.name}'"
    if declared is None:
        raise InvalidModelSpec(f"{where} of the model is not declared")
    if declared.datatype != actual.datatype:
        raise InvalidModelSpec(f"{where}: declared {declared.datatype}, the model has {actual.datatype}")
    if len(declared.shape) != len(actual.shape):
        raise InvalidModelSpec(
            f"{where}: declared shape {declared.shape} has rank {len(declared.shape)}, "
            f"the model has rank {len(actual.shape)} ({actual.shape})"
        )
    shape: list[int] = []
    for axis, (want, have) in enumerate(zip(declared.shape, actual.shape, strict=True)):
        if want != -1 and have != -1 and want != have:
            raise InvalidModelSpec(f"{where}: dimension {axis} is declared {want}, the model has {have}")
        shape.append(have if have != -1 else want)
    return actual.model_copy(update={"shape": shape})
