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

    max_batch_size: int | None = Field(None, ge=0, le=65536, strict=True)
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


class ModelPatch(BaseModel):
    """Body of PATCH /v1/tenants/{t}/models/{m}: batching and instances for new versions.

    A field left out keeps its value; null sets it back to automatic (max_batch_size chosen from each
    version's signature) or to the defaults.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "max_batch_size": 16,
                    "dynamic_batching": {"max_queue_delay_microseconds": 500},
                    "instance_group": {"count": 2, "kind": "cpu"},
                }
            ]
        },
    )

    max_batch_size: int | None = Field(None, ge=0, le=65536, strict=True)
    dynamic_batching: DynamicBatchingSpec | None = None
    instance_group: InstanceGroupSpec | None = None
    warmup: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> ModelPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of max_batch_size, dynamic_batching, instance_group, warmup")
        return self


class DynamicBatchingOut(BaseModel):
    """Triton's dynamic batcher as configured (enabled only when max_batch_size > 0)."""

    enabled: bool
    max_queue_delay_microseconds: int
    preferred_batch_size: list[int]
    preserve_ordering: bool


class InstanceGroupOut(BaseModel):
    """Model instances: how many, on which kind of device, on which GPUs."""

    count: int
    kind: Literal["cpu", "gpu"]
    gpus: list[int]


class Serving(BaseModel):
    """The effective batching and instance settings."""

    max_batch_size: int
    dynamic_batching: DynamicBatchingOut
    instance_group: InstanceGroupOut


class VersionOut(BaseModel):
    """A version: where its artifact is, its signature, its generated config and state.

    `state`: `registered` (stored, loads on its first request, promote or `POST .../load`), `ready`
    (serves; loaded on demand when it is not resident), `failed` (its load failed: `state_message`),
    `unloaded` (released after its keep-warm period; loads again on demand), `retired`. Where it is
    loaded now is `resident_on`; `memory_bytes` is what it takes there (`memory_source`: `triton`
    statistics, `stub` processes, `stub+gpu` when they hold GPU memory too, `grown` when it came to hold
    more after its load, or none yet), `load_seconds` Triton's last load time.
    """

    version: int
    state: str
    state_message: str | None
    resident_on: list[str] | None = None
    memory_bytes: int | None = None
    memory_source: str | None = None
    load_seconds: float | None = None
    memory_unreturned_bytes: int | None = None
    sha256: str
    size_bytes: int
    artifact_uri: str | None = Field(None, description="where the artifact is stored: admins only")
    triton_name: str | None = Field(None, description="the version's name in Triton: admins only")
    signature: dict[str, Any]
    config: str | None
    serving: Serving
    created_at: UtcDateTime
    updated_at: UtcDateTime


class VersionSummary(BaseModel):
    """A version in a model listing."""

    version: int
    state: str
    created_at: UtcDateTime


class ModelOut(BaseModel):
    """A model with its settings, versions and aliases.

    `serving` is what the next version gets (from the latest version's signature, or the declared one);
    `max_batch_size_auto` says it is chosen from each version's signature, not set.
    """

    name: str
    format: ModelFormat
    serving: Serving
    max_batch_size_auto: bool
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    warmup: bool = False
    created_at: UtcDateTime
    versions: list[VersionSummary] = []
    aliases: dict[str, int] = {}


MAX_SWEEP_GRACE_S = 365 * 24 * 3600.0


class SweepRequest(BaseModel):
    """Body of POST /v1/artifacts/sweep (optional)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"dry_run": True}]})

    dry_run: bool = Field(False, strict=True, description="Report what would go; delete nothing.")
    grace_s: float | None = Field(
        None,
        strict=True,
        ge=0,
        le=MAX_SWEEP_GRACE_S,
        allow_inf_nan=False,
        description="Keep unused artifacts stored less than this long ago (default "
        "CP_ARTIFACT_SWEEP_GRACE_S). Uploads under way are safe at 0 too: each delete is decided again "
        "under the artifact's lock, and uploads' temp objects go only once a day old.",
    )


class MissingArtifactOut(BaseModel):
    """A live version whose artifact the store does not hold: it cannot be loaded where it is not already."""

    tenant: str
    model: str
    version: int
    sha256: str


class SweepOut(BaseModel):
    """What a sweep of the artifact store found and did."""

    dry_run: bool
    grace_s: float
    started_at: UtcDateTime
    seconds: float
    listed: int = Field(description="Artifacts in the store.")
    listed_bytes: int
    in_use: int = Field(description="Listed artifacts a live version uses.")
    unused: int = Field(description="Listed artifacts no live version uses (deleted unless recent).")
    unused_bytes: int
    recent: int = Field(description="Unused, but stored within the grace period: kept for now.")
    deleted: int
    deleted_bytes: int
    taken: int = Field(description="Unused when listed, taken by an upload or version before the delete.")
    leftovers_removed: int = Field(description="Temporary objects of uploads whose process ended.")
    missing: int = Field(description="Artifacts live versions use that the store lacks.")
    missing_versions: list[MissingArtifactOut] = Field(description="Some of those versions (at most 100).")
