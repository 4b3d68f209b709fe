"""Model signature and serving specs (pydantic), and the datatype tables between KServe, Triton, numpy,
ONNX and torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

import numpy as np
from onnx import TensorProto
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tritonclient.grpc import model_config_pb2

if TYPE_CHECKING:
    import torch

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
]  # fmt: skip
DATATYPES: tuple[Datatype, ...] = get_args(Datatype)
# Triton takes any UTF-8 string as a tensor name ("0", "input.1", "onnx::Gemm_0", "x:0", "a/b", long ones) and
# hands it to backends as a C string, so only an empty name or one holding NUL cannot be represented.
MAX_TENSOR_NAME = 1024  # this service's limit (exporters' longest names are a few hundred characters)
MAX_RANK = 16


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Spec):
    """One input or output: name, KServe datatype and full shape (-1 = dynamic)."""

    name: str
    datatype: Datatype
    shape: Annotated[list[int], Field(max_length=MAX_RANK)]
    optional: bool = False  # inputs only: a request may leave it out (ONNX inputs with a default value)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        problem = tensor_name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        for dim in shape:
            if dim != -1 and dim < 1:
                raise ValueError(f"dimension {dim} is invalid: use -1 (dynamic) or a size >= 1")
        return shape


def tensor_name_problem(name: str) -> str | None:
    """Why Triton (or this service) cannot serve a tensor of this name; None when it can."""
    if not name:
        return "a tensor name cannot be empty"
    if "\0" in name:
        return "a tensor name cannot contain NUL (Triton passes names to backends as C strings)"
    if len(name) > MAX_TENSOR_NAME:
        return f"a tensor name is at most {MAX_TENSOR_NAME} characters, this one has {len(name)}"
    return None


class Signature(_Spec):
    """Inputs and outputs of a model, in the model's order."""

    inputs: Annotated[list[TensorSpec], Field(min_length=1)]
    outputs: Annotated[list[TensorSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_names(self) -> Signature:
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            seen: set[str] = set()
            for tensor in tensors:
                if tensor.name in seen:
                    raise ValueError(f"{kind} name '{tensor.name}' appears more than once")
                seen.add(tensor.name)
        return self


class DynamicBatchingSpec(_Spec):
    """Triton dynamic batcher settings."""

    preferred_batch_size: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    max_queue_delay_microseconds: Annotated[int, Field(ge=0, le=10_000_000)] = 100
    preserve_ordering: bool = False


class InstanceGroupSpec(_Spec):
    """How many model instances, and where; kind "auto" follows the deployment's device."""

    count: Annotated[int, Field(ge=1, le=16)] = 1
    kind: Literal["auto", "cpu", "gpu"] = "auto"
    gpus: list[Annotated[int, Field(ge=0)]] | None = None

    @model_validator(mode="after")
    def _gpus_need_gpu(self) -> InstanceGroupSpec:
        if self.kind == "cpu" and self.gpus:
            raise ValueError("gpus can only be given with kind 'gpu' or 'auto'")
        if self.gpus is not None and len(set(self.gpus)) != len(self.gpus):
            raise ValueError("gpus must not repeat a GPU")
        return self


@dataclass(frozen=True)
class DtypeRow:
    """One datatype under each of its names; None where that library has no such type."""

    datatype: Datatype
    triton: int  # model_config_pb2.DataType
    numpy: str | None
    onnx: int  # onnx.TensorProto.DataType
    torch: str | None  # attribute of the torch module


DTYPES: tuple[DtypeRow, ...] = (
    DtypeRow("BOOL", model_config_pb2.TYPE_BOOL, "bool", TensorProto.BOOL, "bool"),
    DtypeRow("UINT8", model_config_pb2.TYPE_UINT8, "uint8", TensorProto.UINT8, "uint8"),
    DtypeRow("UINT16", model_config_pb2.TYPE_UINT16, "uint16", TensorProto.UINT16, "uint16"),
    DtypeRow("UINT32", model_config_pb2.TYPE_UINT32, "uint32", TensorProto.UINT32, "uint32"),
    DtypeRow("UINT64", model_config_pb2.TYPE_UINT64, "uint64", TensorProto.UINT64, "uint64"),
    DtypeRow("INT8", model_config_pb2.TYPE_INT8, "int8", TensorProto.INT8, "int8"),
    DtypeRow("INT16", model_config_pb2.TYPE_INT16, "int16", TensorProto.INT16, "int16"),
    DtypeRow("INT32", model_config_pb2.TYPE_INT32, "int32", TensorProto.INT32, "int32"),
    DtypeRow("INT64", model_config_pb2.TYPE_INT64, "int64", TensorProto.INT64, "int64"),
    DtypeRow("FP16", model_config_pb2.TYPE_FP16, "float16", TensorProto.FLOAT16, "float16"),
    DtypeRow("FP32", model_config_pb2.TYPE_FP32, "float32", TensorProto.FLOAT, "float32"),
    DtypeRow("FP64", model_config_pb2.TYPE_FP64, "float64", TensorProto.DOUBLE, "float64"),
    DtypeRow("BYTES", model_config_pb2.TYPE_STRING, "object", TensorProto.STRING, None),
    DtypeRow("BF16", model_config_pb2.TYPE_BF16, None, TensorProto.BFLOAT16, "bfloat16"),
)
_BY_DATATYPE = {row.datatype: row for row in DTYPES}
_BY_TRITON = {row.triton: row for row in DTYPES}
_BY_ONNX = {row.onnx: row for row in DTYPES}
_BY_NUMPY = {np.dtype(row.numpy): row for row in DTYPES if row.numpy is not None}


def triton_dtype(datatype: Datatype) -> int:
    """The `model_config_pb2.DataType` value (TYPE_*) of a KServe datatype."""
    return _BY_DATATYPE[datatype].triton


def datatype_from_triton(triton: int) -> Datatype:
    """The KServe datatype of a Triton `TYPE_*` value; KeyError for TYPE_INVALID or unknown values."""
    return _BY_TRITON[triton].datatype


def numpy_dtype(datatype: Datatype) -> np.dtype[Any] | None:
    """The numpy dtype of a KServe datatype; None for BF16, which numpy lacks."""
    name = _BY_DATATYPE[datatype].numpy
    return np.dtype(name) if name is not None else None


def datatype_from_numpy(dtype: np.dtype[Any]) -> Datatype | None:
    """The KServe datatype of a numpy dtype (str/bytes/object arrays are BYTES); None if unsupported."""
    if dtype.kind in "OSU":
        return "BYTES"
    row = _BY_NUMPY.get(dtype)
    return row.datatype if row is not None else None


def datatype_from_onnx(elem_type: int) -> Datatype | None:
    """The KServe datatype of an ONNX `TensorProto` element type; None if unsupported."""
    row = _BY_ONNX.get(elem_type)
    return row.datatype if row is not None else None


def torch_dtype(datatype: Datatype) -> torch.dtype | None:
    """The torch dtype of a KServe datatype (None for BYTES); needs torch installed."""
    import torch

    name = _BY_DATATYPE[datatype].torch
    return getattr(torch, name) if name is not None else None  # type: ignore[no-any-return]


def datatype_from_torch(dtype: torch.dtype) -> Datatype | None:
    """The KServe datatype of a torch dtype; None if unsupported."""
    import torch

    for row in DTYPES:
        if row.torch is not None and getattr(torch, row.torch) == dtype:
            return row.datatype
    return None
