"""Registry API types."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from control_plane.modelconfig.specs import DynamicBatchingSpec, InstanceGroupSpec, Signature, TensorSpec
from control_plane.names import Name
from control_plane.timestamps import UtcDateTime

ModelFormat = Literal["onnx", "torchscript", "python"]
# Version numbers are INTEGER columns: anything larger is answered 422, not a database error.
MAX_VERSION = 2**31 - 1
VersionNumber = Annotated[int, Field(ge=1, le=MAX_VERSION)]


class ModelSpec(BaseModel):
    """How a model's versions are served; stored with the model."""

    model_config = ConfigDict(extra="forbid")

    max_batch_size: int | None = Field(None, ge=0, le=65536)
    dynamic_batching: DynamicBatchingSpec | None = None
    instance_group: InstanceGroupSpec | None = None
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    warmup: bool = False

    @model_validator(mode="after")
    def _signature(self) -> ModelSpec:
        """Declared inputs and outputs must form a signature (non-empty, unique names): 422, not 500."""
        if self.inputs is not None and self.outputs is not None:
            try:
                Signature(inputs=self.inputs, outputs=self.outputs)
            except ValidationError as exc:
                problems = (e["msg"].removeprefix("Value error, ") for e in exc.errors())
                raise ValueError("; ".join(problems)) from None
        return self


class ModelCreate(ModelSpec):
    """Body of POST /v1/tenants/{t}/models."""

    name: Name
    format: ModelFormat


class VersionOut(BaseModel):
    """A version: where its artifact is, its signature, its generated config and state."""

    version: int
    state: str
    state_message: str | None
    sha256: str
    size_bytes: int
    artifact_uri: str
    triton_name: str
    signature: dict[str, Any]
    config: str | None
    created_at: UtcDateTime
    updated_at: UtcDateTime


class VersionSummary(BaseModel):
    """A version in a model listing."""

    version: int
    state: str
    created_at: UtcDateTime


class ModelOut(ModelSpec):
    """A model with its versions and aliases."""

    name: str
    format: ModelFormat
    created_at: UtcDateTime
    versions: list[VersionSummary] = []
    aliases: dict[str, int] = {}
