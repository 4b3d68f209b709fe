"""TorchScript artifacts: loaded on CPU, run on dummy inputs against a declared signature, or their
signature derived from example inputs (names from forward's arguments, a batch dimension if it has one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from control_plane.modelconfig.examples import Array
from control_plane.modelconfig.exceptions import InvalidArtifact, InvalidModelSpec
from control_plane.modelconfig.specs import (
    Signature,
    TensorSpec,
    datatype_from_numpy,
    datatype_from_torch,
    torch_dtype,
)


def output_name(index: int) -> str:
    """The name of a derived output: Triton's libtorch convention `<name>__<index>`."""
    return f"output__{index}"


def validate_torchscript(path: Path, *, signature: Signature) -> None:
    """Load a TorchScript file on CPU, run it on dummy inputs and check its outputs against `signature`."""
    torch = _import_torch()
    module = load_module(torch, path)
    _check_arguments(module, signature=signature)
    inputs = [_dummy(torch, spec) for spec in signature.inputs]
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


def load_module(torch: Any, path: Path) -> Any:
    """The TorchScript module in `path`, on CPU, in eval mode."""
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InvalidArtifact(f"torch.jit.load: {_torch_reason(exc, path=path)}") from exc
    module.eval()
    return module


def signature_from_example(path: Path, *, example: dict[str, Array]) -> Signature:
    """Run the module on the example; inputs named after forward's arguments, outputs `output__<i>`.

    The first dimension is dynamic (-1) when it is a batch: every input and output has it with one size,
    and a run on the example repeated twice along it doubles every output's first dimension.
    """
    torch = _import_torch()
    module = load_module(torch, path)
    names = _argument_names(module, example)
    # By name: in forward's order, whatever the example's; else in the example's order.
    arrays = [example[name] for name in names] if set(names) <= set(example) else list(example.values())
    outputs = _run(torch, module, arrays, what="the example")
    batched = _has_batch_dim(torch, module, arrays, outputs)
    inputs = [
        _spec(name, _datatype(name, a.dtype), list(a.shape), batched)
        for name, a in zip(names, arrays, strict=True)
    ]
    specs = []
    for index, tensor in enumerate(outputs):
        datatype = datatype_from_torch(tensor.dtype)
        if datatype is None:
            raise InvalidArtifact(
                f"output {index} of the model has dtype {tensor.dtype}, which Triton cannot carry"
            )
        specs.append(_spec(output_name(index), datatype, list(tensor.shape), batched))
    return Signature(inputs=inputs, outputs=specs)


def _argument_names(module: Any, example: dict[str, Array]) -> list[str]:
    """forward's argument names for the example's tensors: by name if they match, else by position."""
    schema = getattr(getattr(module, "forward", None), "schema", None)
    given = list(example)
    if schema is None:
        return given
    arguments = [arg.name for arg in list(schema.arguments)[1:]]  # the first one is `self`
    required = sum(1 for arg in list(schema.arguments)[1:] if not arg.has_default_value())
    if set(given) <= set(arguments):
        ordered = [name for name in arguments if name in given]
        if ordered != arguments[: len(ordered)] or len(ordered) < required:
            missing = [name for name in arguments[: max(required, len(ordered))] if name not in given]
            raise InvalidArtifact(
                f"the example has no tensor for forward argument(s) {', '.join(missing)}; "
                f"forward takes ({', '.join(arguments)})"
            )
        return ordered
    if not required <= len(given) <= len(arguments):
        raise InvalidArtifact(
            f"the example has {len(given)} tensor(s) ({', '.join(given)}) but forward takes "
            f"({', '.join(arguments)}); name them after forward's arguments or give them in order"
        )
    return arguments[: len(given)]


def _datatype(name: str, dtype: np.dtype[Any]) -> Any:
    datatype = datatype_from_numpy(dtype)
    if datatype is None or datatype == "BYTES":
        raise InvalidArtifact(
            f"example input '{name}' has dtype {dtype}; TorchScript models take numeric tensors"
        )
    return datatype


def _run(torch: Any, module: Any, arrays: list[Array], *, what: str) -> list[Any]:
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
    try:
        with torch.inference_mode():
            result = module(*tensors)
    except Exception as exc:
        raise InvalidArtifact(
            f"running the model on {what} failed: {_torch_reason(exc, path=Path())}"
        ) from exc
    return _as_tensors(torch, result)


def _has_batch_dim(torch: Any, module: Any, arrays: list[Array], outputs: list[Any]) -> bool:
    firsts = {a.shape[0] if a.ndim else None for a in arrays} | {
        t.shape[0] if t.dim() else None for t in outputs
    }
    if len(firsts) != 1 or None in firsts:
        return False
    try:
        doubled = _run(torch, module, [np.concatenate([a, a]) for a in arrays], what="a doubled batch")
    except InvalidArtifact:
        return False
    return len(doubled) == len(outputs) and all(
        list(d.shape) == [2 * o.shape[0], *o.shape[1:]] for d, o in zip(doubled, outputs, strict=True)
    )


def _spec(name: str, datatype: Any, shape: list[int], batched: bool) -> TensorSpec:
    return TensorSpec(name=name, datatype=datatype, shape=[-1, *shape[1:]] if batched else shape)


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
