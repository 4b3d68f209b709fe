"""Read a model's real signature from its artifact, and reconcile it with what the publisher declared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto
from pydantic import ValidationError

from control_plane.modelconfig.exceptions import InvalidArtifact, InvalidModelSpec
from control_plane.modelconfig.specs import (
    Signature,
    TensorSpec,
    datatype_from_onnx,
    datatype_from_torch,
    torch_dtype,
)


def read_onnx_signature(path: Path) -> Signature:
    """Check an ONNX file and return its inputs (initializers excluded) and outputs."""
    try:
        # Path-based, so models over 2 GB (external data) are checked without loading them.
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        reason = str(exc).strip().replace(str(path), path.name)
        raise InvalidArtifact(f"onnx.checker: {reason}") from exc
    graph = model.graph
    # Before IR 4 every initializer is also a graph input; those are weights, not inputs.
    initializers = {init.name for init in graph.initializer}
    inputs = [_tensor_spec("input", value) for value in graph.input if value.name not in initializers]
    outputs = [_tensor_spec("output", value) for value in graph.output]
    if not inputs:
        raise InvalidArtifact("the ONNX graph has no inputs (every graph input is an initializer)")
    return _signature(inputs=inputs, outputs=outputs)


def _tensor_spec(kind: str, value: onnx.ValueInfoProto) -> TensorSpec:
    if not value.type.HasField("tensor_type"):
        found = value.type.WhichOneof("value") or "no type"
        raise InvalidArtifact(f"{kind} '{value.name}': only tensors are supported, the model has {found}")
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
        return TensorSpec(name=value.name, datatype=datatype, shape=shape)
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


def validate_torchscript(path: Path, *, signature: Signature) -> None:
    """Load a TorchScript file on CPU, run it on dummy inputs and check its outputs against `signature`."""
    torch = _import_torch()
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InvalidArtifact(f"torch.jit.load: {_torch_reason(exc, path=path)}") from exc
    _check_arguments(module, signature=signature)
    inputs = [_dummy(torch, spec) for spec in signature.inputs]
    module.eval()
    try:
        with torch.inference_mode():
            result = module(*inputs)
    except Exception as exc:
        reason = _torch_reason(exc, path=path)
        raise InvalidArtifact(
            f"running the model on dummy inputs of the declared shapes failed: {reason}"
        ) from exc
    outputs = _as_tensors(torch, result)
    if len(outputs) != len(signature.outputs):
        raise InvalidArtifact(
            f"the model returns {len(outputs)} output(s), {len(signature.outputs)} declared "
            f"({', '.join(spec.name for spec in signature.outputs)})"
        )
    for spec, tensor in zip(signature.outputs, outputs, strict=True):
        _check_output(spec, tensor=tensor)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # torch is an optional extra
        raise InvalidModelSpec("TorchScript models cannot be checked: torch is not installed here") from exc
    return torch


def _torch_reason(exc: Exception, *, path: Path) -> str:
    # TorchScript interpreter errors carry a serialized traceback; the cause is on the last line.
    lines = [line.strip() for line in str(exc).replace(str(path), path.name).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[-1] if "TorchScript" in lines[0] and len(lines) > 1 else lines[0]


def _check_arguments(module: Any, *, signature: Signature) -> None:
    schema = getattr(getattr(module, "forward", None), "schema", None)
    if schema is None:
        return
    arguments = list(schema.arguments)[1:]  # the first one is `self`
    required = [arg for arg in arguments if not arg.has_default_value()]
    declared = len(signature.inputs)
    if not len(required) <= declared <= len(arguments):
        takes = (
            str(len(required)) if len(required) == len(arguments) else f"{len(required)} to {len(arguments)}"
        )
        raise InvalidArtifact(
            f"the model's forward takes {takes} input(s) ({', '.join(arg.name for arg in arguments)}), "
            f"{declared} declared ({', '.join(spec.name for spec in signature.inputs)})"
        )
    for arg, spec in zip(arguments, signature.inputs, strict=False):
        if str(arg.type) not in ("Tensor", "Optional[Tensor]"):
            raise InvalidArtifact(
                f"input '{spec.name}': forward argument '{arg.name}' is {arg.type}, only tensors can be fed"
            )


def _dummy(torch: Any, spec: TensorSpec) -> Any:
    dtype = torch_dtype(spec.datatype)
    if dtype is None:
        raise InvalidModelSpec(
            f"input '{spec.name}': dtype {spec.datatype} cannot be fed to a TorchScript model"
        )
    return torch.zeros([dim if dim != -1 else 1 for dim in spec.shape], dtype=dtype)


def _as_tensors(torch: Any, result: Any) -> list[Any]:
    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, tuple | list) and all(isinstance(item, torch.Tensor) for item in result):
        return list(result)
    raise InvalidArtifact(
        f"the model returns {type(result).__name__}; expected a tensor or a tuple/list of tensors"
    )


def _check_output(spec: TensorSpec, *, tensor: Any) -> None:
    where = f"output '{spec.name}'"
    datatype = datatype_from_torch(tensor.dtype)
    if datatype != spec.datatype:
        raise InvalidArtifact(
            f"{where}: the model returns {datatype or tensor.dtype}, declared {spec.datatype}"
        )
    shape = list(tensor.shape)
    if len(shape) != len(spec.shape):
        raise InvalidArtifact(
            f"{where}: the model returns rank {len(shape)} ({shape}), "
            f"declared rank {len(spec.shape)} ({spec.shape})"
        )
    for axis, (want, have) in enumerate(zip(spec.shape, shape, strict=True)):
        if want not in (-1, have):
            raise InvalidArtifact(
                f"{where}: dimension {axis} is declared {want}, the model returns {have} "
                "(for dummy inputs with every dynamic dimension set to 1)"
            )
