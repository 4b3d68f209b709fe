"""Generate a Triton model config (config.pbtxt) through Triton's own protobuf, never through strings."""

from __future__ import annotations

import json
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from control_plane.modelconfig.exceptions import InvalidModelSpec
from control_plane.modelconfig.specs import (
    DynamicBatchingSpec,
    InstanceGroupSpec,
    Signature,
    TensorSpec,
    triton_dtype,
)
from control_plane.settings import Device, Runtime

ModelFormat = Literal["onnx", "torchscript", "python"]
DEFAULT_MAX_BATCH_SIZE = 8
ARTIFACT_FILENAMES: dict[ModelFormat, str] = {
    "onnx": "model.onnx",
    "torchscript": "model.pt",
    "python": "model.py",
}


def artifact_filename(model_format: str) -> str:
    """The file name a version's artifact gets in its Triton version directory."""
    for known, filename in ARTIFACT_FILENAMES.items():
        if known == model_format:
            return filename
    raise ValueError(f"unknown model format {model_format!r}")


def batching_plan(signature: Signature, *, requested_max_batch_size: int | None) -> tuple[int, Signature]:
    """Triton's max_batch_size for this signature, and the signature as config dims (batch dim removed)."""
    if requested_max_batch_size is not None and requested_max_batch_size < 0:
        raise InvalidModelSpec(f"max_batch_size must be >= 0, got {requested_max_batch_size}")
    if requested_max_batch_size == 0:
        return 0, signature
    blocker = _batching_blocker(signature)
    if blocker is not None:
        if requested_max_batch_size is None:
            return 0, signature
        raise InvalidModelSpec(
            f"max_batch_size {requested_max_batch_size} needs a dynamic first dimension (-1) on every "
            f"input and output, but {blocker}; use max_batch_size 0"
        )
    if requested_max_batch_size is None and any(
        len(s.shape) < 2 for s in (*signature.inputs, *signature.outputs)
    ):
        # A [N] tensor batches only as [N, 1] (Triton has no per-item scalars): clients would have to send
        # and would get other shapes than the framework's, so that is only done when asked for.
        return 0, signature
    return requested_max_batch_size or DEFAULT_MAX_BATCH_SIZE, Signature(
        inputs=[_without_batch_dim(spec) for spec in signature.inputs],
        outputs=[_without_batch_dim(spec) for spec in signature.outputs],
    )


def check_libtorch_names(signature: Signature) -> None:
    """Triton's libtorch backend finds outputs by `<name>__<index>`: refuse other output names there."""
    for index, spec in enumerate(signature.outputs):
        base, _, position = spec.name.rpartition("__")
        if not base or position != str(index):
            raise InvalidModelSpec(
                f"output '{spec.name}': Triton's libtorch backend (native runtime) finds TorchScript outputs "
                f"by the name <name>__<index>; name output {index} e.g. 'output__{index}'"
            )


def _batching_blocker(signature: Signature) -> str | None:
    for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        for spec in tensors:
            if not spec.shape:
                return f"{kind} '{spec.name}' is a scalar"
            if spec.shape[0] != -1:
                return f"{kind} '{spec.name}' has fixed first dimension {spec.shape[0]} (shape {spec.shape})"
    return None


def _without_batch_dim(spec: TensorSpec) -> TensorSpec:
    return spec.model_copy(update={"shape": spec.shape[1:]})


def build_config(
    *,
    name: str,
    model_format: ModelFormat,
    signature: Signature,
    max_batch_size: int,
    dynamic_batching: DynamicBatchingSpec | None,
    instance_group: InstanceGroupSpec,
    runtime: Runtime,
    device: Device,
    gpus: list[int],
    warmup: bool,
) -> mc.ModelConfig:
    """The Triton model config; `signature` holds config dims (no batch dim when max_batch_size > 0)."""
    if max_batch_size < 0:
        raise InvalidModelSpec(f"max_batch_size must be >= 0, got {max_batch_size}")
    config = mc.ModelConfig(name=name, max_batch_size=max_batch_size)
    _set_backend(config, model_format=model_format, runtime=runtime)
    if config.backend == "python" and model_format == "onnx":
        _check_runner_dtypes(signature)
    if config.platform == "pytorch_libtorch":
        check_libtorch_names(signature)
    for spec in signature.inputs:
        dims, scalar = _config_dims(spec)
        tensor = config.input.add(
            name=spec.name, data_type=triton_dtype(spec.datatype), dims=dims, optional=spec.optional
        )
        _scalar(config, tensor, scalar=scalar, kind="inputs")
    for spec in signature.outputs:
        dims, scalar = _config_dims(spec)
        tensor = config.output.add(name=spec.name, data_type=triton_dtype(spec.datatype), dims=dims)
        _scalar(config, tensor, scalar=scalar, kind="outputs")
    _set_dynamic_batching(config, spec=dynamic_batching)
    config.instance_group.append(_instance_group(instance_group, device=device, gpus=gpus))
    if warmup:
        config.model_warmup.append(_warmup(signature))
    config.version_policy.latest.num_versions = 1
    return config


def _scalar(
    config: mc.ModelConfig, tensor: mc.ModelInput | mc.ModelOutput, *, scalar: bool, kind: str
) -> None:
    """A 0-d tensor: Triton's dims cannot be empty, so it is [1] to clients.

    Per batch item (max_batch_size > 0) an empty reshape hands the model a scalar. Without batching Triton
    refuses an empty reshape: the native onnxruntime backend maps [1] to a 0-d tensor itself, and our
    runners read the names from the `scalar_inputs` / `scalar_outputs` parameters (JSON lists).
    """
    if not scalar:
        return
    if config.max_batch_size > 0:
        tensor.reshape.SetInParent()
        return
    key = f"scalar_{kind}"
    names = json.loads(config.parameters[key].string_value or "[]")
    config.parameters[key].string_value = json.dumps([*names, tensor.name])


def _set_backend(config: mc.ModelConfig, *, model_format: ModelFormat, runtime: Runtime) -> None:
    if model_format == "python" or runtime == Runtime.PYTHON:
        config.backend = "python"
        if model_format != "python":
            # Read by our runner model.py (control_plane/runners) to know what to load.
            config.parameters["runner_format"].string_value = model_format
            config.parameters["artifact_filename"].string_value = ARTIFACT_FILENAMES[model_format]
    elif model_format == "onnx":
        config.backend = "onnxruntime"
        config.default_model_filename = ARTIFACT_FILENAMES["onnx"]
    else:
        config.platform = "pytorch_libtorch"
        config.backend = "pytorch"
        config.default_model_filename = ARTIFACT_FILENAMES["torchscript"]


def _check_runner_dtypes(signature: Signature) -> None:
    for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        for spec in tensors:
            if spec.datatype == "BF16":
                raise InvalidModelSpec(
                    f"{kind} '{spec.name}': dtype BF16 is not supported by the Python-backend ONNX runner "
                    "(onnxruntime's Python API has no bfloat16); use the native runtime or export FP16/FP32"
                )


def _config_dims(spec: TensorSpec) -> tuple[list[int], bool]:
    # Triton wants at least one dim: a scalar is configured as [1] and reshaped to [].
    return (list(spec.shape), False) if spec.shape else ([1], True)


def _set_dynamic_batching(config: mc.ModelConfig, *, spec: DynamicBatchingSpec | None) -> None:
    max_batch_size = config.max_batch_size
    if max_batch_size == 0:
        if spec is not None:
            raise InvalidModelSpec(
                "dynamic_batching is set but the model does not batch (max_batch_size is 0)"
            )
        return
    spec = spec or DynamicBatchingSpec()
    too_large = [size for size in spec.preferred_batch_size if size > max_batch_size]
    if too_large:
        raise InvalidModelSpec(
            f"dynamic_batching.preferred_batch_size {too_large[0]} exceeds max_batch_size {max_batch_size}"
        )
    # No preferred sizes unless asked: Triton then forms the largest batch available instead of
    # dispatching as soon as a small "preferred" size is reached (Triton's own advice for most models).
    config.dynamic_batching.preferred_batch_size.extend(sorted(set(spec.preferred_batch_size)))
    config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_microseconds
    config.dynamic_batching.preserve_ordering = spec.preserve_ordering


def _instance_group(spec: InstanceGroupSpec, *, device: Device, gpus: list[int]) -> mc.ModelInstanceGroup:
    kind = spec.kind if spec.kind != "auto" else device.value
    if kind == "cpu":
        return mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.count)
    chosen = spec.gpus if spec.gpus is not None else gpus
    return mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=spec.count, gpus=chosen)


def _warmup(signature: Signature) -> mc.ModelWarmup:
    warmup = mc.ModelWarmup(name="zero_data", batch_size=1)
    for spec in signature.inputs:
        dims, _ = _config_dims(spec)
        warmup.inputs[spec.name].CopyFrom(
            mc.ModelWarmup.Input(
                data_type=triton_dtype(spec.datatype),
                dims=[dim if dim != -1 else 1 for dim in dims],
                zero_data=True,
            )
        )
    return warmup


def render_config(config: mc.ModelConfig) -> str:
    """config.pbtxt text of a model config."""
    return str(text_format.MessageToString(config))


def parse_config(text: str) -> mc.ModelConfig:
    """A model config from config.pbtxt text; InvalidModelSpec if it does not parse."""
    try:
        return text_format.Parse(text, mc.ModelConfig())
    except text_format.ParseError as exc:
        raise InvalidModelSpec(f"config.pbtxt does not parse: {exc}") from exc
