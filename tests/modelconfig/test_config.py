"""Batching rules and config.pbtxt generation through Triton's protobuf (golden files)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from control_plane.modelconfig.config import (
    DEFAULT_MAX_BATCH_SIZE,
    batching_plan,
    build_config,
    parse_config,
    render_config,
)
from control_plane.modelconfig.exceptions import InvalidModelSpec
from control_plane.modelconfig.specs import DynamicBatchingSpec, InstanceGroupSpec, Signature
from control_plane.settings import Device, Runtime

GOLDEN = Path(__file__).parent / "golden"


def _sig(inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]) -> Signature:
    return Signature.model_validate(
        {
            "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs],
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in outputs],
        }
    )


MLP = _sig([("x", "FP32", [-1, 4])], [("y", "FP32", [-1, 3])])


def test_dynamic_first_dims_batch_with_default_size() -> None:
    max_batch_size, stripped = batching_plan(MLP, requested_max_batch_size=None)
    assert max_batch_size == DEFAULT_MAX_BATCH_SIZE == 8
    assert stripped == _sig([("x", "FP32", [4])], [("y", "FP32", [3])])


def test_requested_size_is_kept() -> None:
    assert batching_plan(MLP, requested_max_batch_size=32)[0] == 32


def test_zero_means_no_batching_and_full_shapes() -> None:
    assert batching_plan(MLP, requested_max_batch_size=0) == (0, MLP)


def test_negative_size_is_rejected() -> None:
    with pytest.raises(InvalidModelSpec, match="max_batch_size must be >= 0, got -1"):
        batching_plan(MLP, requested_max_batch_size=-1)


@pytest.mark.parametrize(
    ("signature", "blocker"),
    [
        (_sig([("x", "FP32", [1, 4])], [("y", "FP32", [-1, 3])]), "input 'x' has fixed first dimension 1"),
        (_sig([("x", "FP32", [-1, 4])], [("y", "FP32", [2, 3])]), "output 'y' has fixed first dimension 2"),
        (_sig([("x", "FP32", [-1, 4]), ("t", "FP32", [])], [("y", "FP32", [-1])]), "input 't' is a scalar"),
    ],
)
def test_fixed_first_dims_and_scalars_forbid_batching(signature: Signature, blocker: str) -> None:
    assert batching_plan(signature, requested_max_batch_size=None) == (0, signature)
    with pytest.raises(InvalidModelSpec, match=blocker) as info:
        batching_plan(signature, requested_max_batch_size=4)
    assert "max_batch_size 4 needs a dynamic first dimension" in info.value.message


def test_no_preferred_batch_sizes_unless_asked() -> None:
    config = _config(mbs=8)
    assert list(config.dynamic_batching.preferred_batch_size) == []
    assert config.dynamic_batching.max_queue_delay_microseconds == 100


def _config(**overrides: Any) -> mc.ModelConfig:
    signature = overrides.pop("signature", MLP)
    max_batch_size, stripped = batching_plan(signature, requested_max_batch_size=overrides.pop("mbs", None))
    arguments: dict[str, Any] = {
        "name": "acme--mlp--v1",
        "model_format": "onnx",
        "signature": stripped,
        "max_batch_size": max_batch_size,
        "dynamic_batching": None,
        "instance_group": InstanceGroupSpec(),
        "runtime": Runtime.NATIVE,
        "device": Device.CPU,
        "gpus": [],
        "warmup": False,
    }
    return build_config(**{**arguments, **overrides})


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CP_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def test_golden_gpu_native_onnx() -> None:
    config = _config(
        device=Device.GPU,
        gpus=[0, 1],
        instance_group=InstanceGroupSpec(count=2),
        dynamic_batching=DynamicBatchingSpec(max_queue_delay_microseconds=500),
        mbs=16,
        warmup=True,
    )
    text = render_config(config)
    _golden("gpu_native_onnx.pbtxt", text)
    assert parse_config(text) == config


def test_golden_cpu_python_onnx() -> None:
    config = _config(runtime=Runtime.PYTHON, instance_group=InstanceGroupSpec(count=2), warmup=True)
    text = render_config(config)
    _golden("cpu_python_onnx.pbtxt", text)
    assert parse_config(text) == config


def test_golden_gpu_native_torchscript() -> None:
    signature = _sig([("x", "FP32", [3, 4])], [("scores__0", "FP32", [3, 2]), ("label__1", "INT64", [3])])
    config = _config(
        model_format="torchscript",
        signature=signature,
        device=Device.GPU,
        gpus=[0, 1],
        instance_group=InstanceGroupSpec(gpus=[1]),
    )
    text = render_config(config)
    _golden("gpu_native_torchscript.pbtxt", text)
    assert parse_config(text) == config


def test_python_format_has_no_runner_parameters() -> None:
    config = _config(model_format="python", runtime=Runtime.NATIVE)
    assert config.backend == "python"
    assert not config.platform and not config.default_model_filename
    assert dict(config.parameters) == {}


def test_torchscript_on_python_runtime_names_its_runner() -> None:
    config = _config(model_format="torchscript", runtime=Runtime.PYTHON)
    assert config.backend == "python"
    assert config.parameters["runner_format"].string_value == "torchscript"
    assert config.parameters["artifact_filename"].string_value == "model.pt"


def test_spec_kind_overrides_the_device() -> None:
    on_gpu = _config(device=Device.CPU, instance_group=InstanceGroupSpec(kind="gpu", count=3))
    assert on_gpu.instance_group[0] == mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_GPU, count=3)
    on_cpu = _config(device=Device.GPU, gpus=[0], instance_group=InstanceGroupSpec(kind="cpu"))
    assert on_cpu.instance_group[0] == mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)


def test_dynamic_batching_only_when_batching() -> None:
    assert not _config(mbs=0).HasField("dynamic_batching")
    with pytest.raises(InvalidModelSpec, match="dynamic_batching is set but the model does not batch"):
        _config(mbs=0, dynamic_batching=DynamicBatchingSpec())


def test_preferred_sizes_must_fit() -> None:
    config = _config(mbs=8, dynamic_batching=DynamicBatchingSpec(preferred_batch_size=[8, 4, 4]))
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    with pytest.raises(InvalidModelSpec, match="preferred_batch_size 16 exceeds max_batch_size 8"):
        _config(mbs=8, dynamic_batching=DynamicBatchingSpec(preferred_batch_size=[4, 16]))


def test_rank_one_tensors_batch_only_when_asked() -> None:
    # [N] would batch as [N, 1] (a per-item scalar): other shapes than the framework's, so not by default.
    signature = _sig([("x", "INT64", [-1])], [("y", "FP32", [-1, 2])])
    assert batching_plan(signature, requested_max_batch_size=None) == (0, signature)
    assert _config(signature=signature).input[0].dims == [-1]


def test_scalars_get_dims_one_and_an_empty_reshape() -> None:
    signature = _sig([("x", "INT64", [-1])], [("y", "FP32", [-1, 2])])
    config = _config(signature=signature, warmup=True, mbs=8)
    assert config.max_batch_size == 8
    assert list(config.input[0].dims) == [1] and config.input[0].HasField("reshape")
    assert list(config.input[0].reshape.shape) == []
    assert not config.output[0].HasField("reshape")
    assert list(config.model_warmup[0].inputs["x"].dims) == [1]


def test_scalars_without_batching_are_dims_one_and_named_for_the_runner() -> None:
    # Triton refuses an empty reshape when the model does not batch: [1], and the runner reshapes.
    signature = _sig([("s", "FP32", []), ("x", "FP32", [2])], [("t", "FP32", [])])
    config = _config(signature=signature, runtime=Runtime.PYTHON)
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [1] and not config.input[0].HasField("reshape")
    assert json.loads(config.parameters["scalar_inputs"].string_value) == ["s"]
    assert json.loads(config.parameters["scalar_outputs"].string_value) == ["t"]


@pytest.mark.parametrize("mbs", [None, 0, 4])
def test_native_and_runner_configs_agree_on_names_datatypes_and_shapes(mbs: int | None) -> None:
    signature = Signature.model_validate(
        {
            "inputs": [
                {"name": "onnx::Gemm_0", "datatype": "FP16", "shape": [-1, 3]},
                {"name": "x:0", "datatype": "BYTES", "shape": [-1, 2]},
                {"name": "/m/bias", "datatype": "UINT64", "shape": [-1, 1], "optional": True},
            ],
            "outputs": [{"name": "0", "datatype": "BOOL", "shape": [-1, 3]}],
        }
    )

    def tensors(runtime: Runtime) -> list[tuple[str, int, list[int], bool, bool]]:
        config = _config(signature=signature, runtime=runtime, mbs=mbs)
        return [
            (t.name, t.data_type, list(t.dims), t.HasField("reshape"), getattr(t, "optional", False))
            for t in (*config.input, *config.output)
        ]

    assert tensors(Runtime.NATIVE) == tensors(Runtime.PYTHON)
    assert tensors(Runtime.NATIVE)[2][4] is True  # the optional input stays optional


def test_warmup_sets_dynamic_dims_to_one() -> None:
    signature = _sig([("ids", "INT32", [-1, -1]), ("mask", "BOOL", [-1, -1])], [("y", "FP32", [-1, 2])])
    warmup = _config(signature=signature, warmup=True).model_warmup[0]
    assert warmup.batch_size == 1
    assert {name: list(value.dims) for name, value in warmup.inputs.items()} == {"ids": [1], "mask": [1]}
    assert all(value.zero_data for value in warmup.inputs.values())
    assert warmup.inputs["mask"].data_type == mc.TYPE_BOOL


def test_bf16_is_refused_by_the_onnx_runner_only() -> None:
    signature = _sig([("x", "BF16", [-1, 4])], [("y", "FP32", [-1, 3])])
    assert _config(signature=signature, runtime=Runtime.NATIVE).input[0].data_type == mc.TYPE_BF16
    with pytest.raises(
        InvalidModelSpec, match="input 'x': dtype BF16 is not supported by the Python-backend ONNX runner"
    ):
        _config(signature=signature, runtime=Runtime.PYTHON)
    as_torchscript = _config(signature=signature, runtime=Runtime.PYTHON, model_format="torchscript")
    assert as_torchscript.input[0].data_type == mc.TYPE_BF16  # torch takes it through DLPack


def test_native_torchscript_outputs_follow_libtorchs_naming() -> None:
    signature = _sig([("x", "FP32", [-1, 4])], [("scores", "FP32", [-1, 3])])
    with pytest.raises(InvalidModelSpec, match=r"output 'scores': Triton's libtorch backend .* 'output__0'"):
        _config(model_format="torchscript", signature=signature)
    assert (
        _config(model_format="torchscript", signature=signature, runtime=Runtime.PYTHON).output[0].name
        == "scores"
    )


def test_parse_errors_are_invalid_model_spec() -> None:
    with pytest.raises(InvalidModelSpec, match=r"config\.pbtxt does not parse"):
        parse_config("name: ")
    with pytest.raises(InvalidModelSpec, match="no_such_field"):
        parse_config('no_such_field: "x"')
