"""Body types of the inference endpoints, for the OpenAPI document only.

The data plane (`control_plane/dataplane/`) never decodes bodies with these: it passes KServe v2 bodies
through to Triton untouched. They describe the KServe v2 / Open Inference Protocol and `/v1/predict`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip
TENSOR_DATA = (
    "the tensor's elements, flat in row-major order or nested by the shape "
    "(absent when they travel in the binary extension)"
)


class V2Error(BaseModel):
    """KServe v2's error body (read by stock clients), plus our error kind."""

    error: str = Field(description="what went wrong", examples=["model 'mlp' not found"])
    kind: str = Field(description="the kind of error", examples=["NotFound"])


class PredictRequest(BaseModel):
    """Body of POST /v1/predict/{model}: each input by name, as a nested list shaped like the tensor."""

    model_config = ConfigDict(json_schema_extra={"example": {"inputs": {"x": [[1.0, 2.0, 3.0, 4.0]]}}})

    inputs: dict[str, list[Any]]


class PredictResponse(BaseModel):
    """Answer of POST /v1/predict/{model}: which version answered, and each output as a nested list."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"model": "mlp", "version": 3, "outputs": {"y": [[0.1, 0.7, 0.2]]}}}
    )

    model: str
    version: int
    outputs: dict[str, list[Any]]


class InferInput(BaseModel):
    """One input tensor of a KServe v2 infer request."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = Field(
        None, description="e.g. `binary_data_size` when the tensor's bytes follow the JSON header"
    )
    data: list[Any] | None = Field(None, description=TENSOR_DATA)


class InferRequestedOutput(BaseModel):
    """An output the client asks for (all outputs when the request names none)."""

    name: str
    parameters: dict[str, Any] | None = Field(None, description="e.g. `binary_data: true`")


class InferRequest(BaseModel):
    """A KServe v2 infer request (JSON; or this JSON header followed by raw tensor bytes)."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}],
                "outputs": [{"name": "y"}],
            }
        }
    )

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput]
    outputs: list[InferRequestedOutput] | None = None


class InferOutput(BaseModel):
    """One output tensor of a KServe v2 infer response."""

    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = Field(None, description=TENSOR_DATA)


class InferResponse(BaseModel):
    """A KServe v2 infer response; `model_name` is the tenant's model name, not Triton's."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "model_name": "mlp",
                "model_version": "3",
                "outputs": [{"name": "y", "shape": [1, 3], "datatype": "FP32", "data": [0.1, 0.7, 0.2]}],
            }
        }
    )

    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutput]


class TensorMetadata(BaseModel):
    """A tensor in model metadata (-1 for a variable dimension)."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """KServe v2 model metadata."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "mlp",
                "versions": ["3"],
                "platform": "onnxruntime_onnx",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
            }
        }
    )

    name: str
    versions: list[str] | None = None
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    """KServe v2 server metadata."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "name": "triton-control-plane",
                "version": "2.51.0",
                "extensions": ["classification", "binary_tensor_data", "statistics"],
            }
        }
    )

    name: str
    version: str
    extensions: list[str]


MODELS: tuple[type[BaseModel], ...] = (
    V2Error,
    PredictRequest,
    PredictResponse,
    InferRequest,
    InferResponse,
    ModelMetadata,
    ServerMetadata,
)
