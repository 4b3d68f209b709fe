"""Spec validation and the datatype tables."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from onnx import TensorProto
from pydantic import ValidationError
from tritonclient.grpc import model_config_pb2 as mc

from control_plane.modelconfig import specs
from control_plane.modelconfig.specs import (
    DynamicBatchingSpec,
    InstanceGroupSpec,
    Signature,
    TensorSpec,
)

# What exporters name tensors: torch.onnx.export's defaults, TensorFlow converters, paths, long names.
EXPORTER_NAMES = [
    "x",
    "0",
    "123",
    "input.1",
    "onnx::Gemm_0",
    "x:0",
    "/model/Gemm_output_0",
    "a b",
    "ü",
    "a" * 1024,
]


@pytest.mark.parametrize("name", EXPORTER_NAMES)
def test_every_name_triton_takes_is_accepted(name: str) -> None:
    assert TensorSpec(name=name, datatype="FP32", shape=[-1, 4]).name == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "cannot be empty"),
        ("x\0y", "cannot contain NUL (Triton passes names to backends as C strings)"),
        ("a" * 1025, "at most 1024 characters, this one has 1025"),
    ],
)
def test_names_triton_cannot_represent_are_rejected_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(reason)):
        TensorSpec(name=name, datatype="FP32", shape=[1])


@pytest.mark.parametrize("shape", [[0], [-2, 3], [4, 0]])
def test_bad_dims_rejected(shape: list[int]) -> None:
    with pytest.raises(ValidationError, match="use -1"):
        TensorSpec(name="x", datatype="FP32", shape=shape)


def test_unknown_datatype_rejected() -> None:
    with pytest.raises(ValidationError):
        TensorSpec(name="x", datatype="STRING", shape=[1])  # type: ignore[arg-type]


def test_signature_needs_unique_names_and_tensors() -> None:
    x = TensorSpec(name="x", datatype="FP32", shape=[1])
    with pytest.raises(ValidationError, match="input name 'x' appears more than once"):
        Signature(inputs=[x, x], outputs=[x])
    with pytest.raises(ValidationError):
        Signature(inputs=[x], outputs=[])


def test_instance_group_rules() -> None:
    assert InstanceGroupSpec().model_dump() == {"count": 1, "kind": "auto", "gpus": None}
    with pytest.raises(ValidationError):
        InstanceGroupSpec(count=17)
    with pytest.raises(ValidationError, match="only be given with kind"):
        InstanceGroupSpec(kind="cpu", gpus=[0])
    with pytest.raises(ValidationError, match="repeat"):
        InstanceGroupSpec(gpus=[0, 0])


def test_dynamic_batching_defaults() -> None:
    spec = DynamicBatchingSpec()
    assert spec.preferred_batch_size == [] and spec.max_queue_delay_microseconds == 100
    with pytest.raises(ValidationError):
        DynamicBatchingSpec(preferred_batch_size=[0])


def test_tables_cover_every_datatype_both_ways() -> None:
    assert {row.datatype for row in specs.DTYPES} == set(specs.DATATYPES)
    for datatype in specs.DATATYPES:
        triton = specs.triton_dtype(datatype)
        assert mc.DataType.Name(triton).startswith("TYPE_")
        assert specs.datatype_from_triton(triton) == datatype
    assert specs.triton_dtype("BYTES") == mc.TYPE_STRING
    assert specs.triton_dtype("FP32") == mc.TYPE_FP32


@pytest.mark.parametrize(
    ("datatype", "np_dtype", "onnx_type", "torch_dtype"),
    [
        ("FP32", np.float32, TensorProto.FLOAT, torch.float32),
        ("FP16", np.float16, TensorProto.FLOAT16, torch.float16),
        ("INT64", np.int64, TensorProto.INT64, torch.int64),
        ("BOOL", np.bool_, TensorProto.BOOL, torch.bool),
        ("UINT8", np.uint8, TensorProto.UINT8, torch.uint8),
        ("BF16", None, TensorProto.BFLOAT16, torch.bfloat16),
        ("BYTES", np.object_, TensorProto.STRING, None),
    ],
)
def test_dtype_rows(
    datatype: specs.Datatype, np_dtype: type | None, onnx_type: int, torch_dtype: object
) -> None:
    assert specs.numpy_dtype(datatype) == (np.dtype(np_dtype) if np_dtype is not None else None)
    if np_dtype is not None:
        assert specs.datatype_from_numpy(np.dtype(np_dtype)) == datatype
    assert specs.datatype_from_onnx(onnx_type) == datatype
    assert specs.torch_dtype(datatype) == torch_dtype
    if torch_dtype is not None:
        assert specs.datatype_from_torch(torch_dtype) == datatype  # type: ignore[arg-type]


def test_unsupported_types_map_to_none() -> None:
    assert specs.datatype_from_onnx(TensorProto.COMPLEX64) is None
    assert specs.datatype_from_onnx(TensorProto.FLOAT8E4M3FN) is None
    assert specs.datatype_from_numpy(np.dtype(np.complex64)) is None
    assert specs.datatype_from_numpy(np.dtype("U3")) == "BYTES"
    assert specs.datatype_from_torch(torch.complex64) is None
