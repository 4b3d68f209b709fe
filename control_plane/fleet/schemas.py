"""Fleet API types: instances with their placements, and a model's replicas and placements."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from control_plane.names import Name
from control_plane.timestamps import UtcDateTime

INSTANCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
InstanceName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=INSTANCE_NAME)]
MAX_REPLICAS = 64


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "http" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ValueError("must be http://host:port (Triton's HTTP endpoint, no path)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must be http://host:port (Triton's HTTP endpoint, no path)")
    return f"http://{parts.netloc}"


def _grpc_address(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in value or " " in value:
        raise ValueError("must be host:port (Triton's gRPC endpoint)")
    return value


HttpUrl = Annotated[str, StringConstraints(max_length=300), AfterValidator(_http_url)]
GrpcAddress = Annotated[str, StringConstraints(max_length=300), AfterValidator(_grpc_address)]


class InstanceCreate(BaseModel):
    """Body of POST /v1/instances: a Triton server to add to the fleet."""

    model_config = ConfigDict(extra="forbid")

    name: InstanceName = Field(description="stable name; the instance keeps it when its address changes")
    http_url: HttpUrl = Field(examples=["http://10.0.0.7:8000"])
    grpc_url: GrpcAddress | None = Field(None, description="default: the HTTP port + 1; loads use it")


class InstanceUpdate(BaseModel):
    """Body of PUT /v1/instances/{name}: the instance's current address (it came back elsewhere),
    and/or its memory budget (null: back to CP_INSTANCE_MEMORY_BUDGET_BYTES)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"memory_budget_bytes": 8 * 1024**3}]}
    )

    http_url: HttpUrl | None = None
    grpc_url: GrpcAddress | None = None
    memory_budget_bytes: int | None = Field(None, ge=1, le=2**60, strict=True)

    @model_validator(mode="after")
    def _something(self) -> InstanceUpdate:
        if not self.model_fields_set & {"http_url", "memory_budget_bytes"}:
            raise ValueError("give http_url (a new address) or memory_budget_bytes")
        if self.grpc_url is not None and self.http_url is None:
            raise ValueError("grpc_url comes with http_url")
        return self


class PlacementOut(BaseModel):
    """One version on one instance: desired (`ready` or `absent`) and last observed state."""

    tenant: str
    model: str
    version: int
    triton_model: str
    desired: Literal["ready", "absent"]
    observed: str
    message: str | None
    loaded_at: UtcDateTime | None
    updated_at: UtcDateTime


class InstanceOut(BaseModel):
    """A Triton instance of the fleet as the registry and the last reconcile pass know it."""

    name: str
    http_url: str
    grpc_url: str
    origin: Literal["settings", "api", "embedded"]
    state: str = Field(description="ready, unavailable or unknown (never probed)")
    draining: bool
    draining_since: UtcDateTime | None
    last_seen_at: UtcDateTime | None
    last_reconciled_at: UtcDateTime | None
    last_error: str | None
    drift: int | None = Field(description="placements not as desired at this process's last pass")
    memory_budget_bytes: int | None = Field(
        None, description="its memory budget (its own, else CP_INSTANCE_MEMORY_BUDGET_BYTES; null: none)"
    )
    resident_bytes: int | None = Field(None, description="memory of the versions loaded there (last pass)")
    resident_versions: int | None = None
    pinned_over_budget_bytes: int | None = Field(
        None, description="pinned versions the budget cannot hold (reported, never exceeded)"
    )
    over_budget_bytes: int | None = Field(
        None,
        description="memory held above the budget now: versions measured bigger than counted that requests "
        "keep busy (evicted once idle), or pinned ones",
    )
    waiting_for_room: list[str] = Field(default_factory=list, description="versions waiting for memory")
    placements: list[PlacementOut]


class ReplicasUpdate(BaseModel):
    """Body of PUT /v1/tenants/{t}/models/{m}/placement."""

    model_config = ConfigDict(extra="forbid")

    replicas: int | None = Field(
        None, ge=1, le=MAX_REPLICAS, strict=True, description="instances that serve each servable version"
    )
    pinned_aliases: list[Name] | None = Field(
        None,
        max_length=16,
        description="aliases whose versions stay resident, never evicted for memory ([] pins nothing); "
        "alias names (lowercase letters, digits, single '-' or '_' between them)",
    )


class VersionInstance(BaseModel):
    """Where one version is placed."""

    instance: str
    desired: Literal["ready", "absent"]
    observed: str
    message: str | None


class VersionPlacement(BaseModel):
    """A version of the model and its placements."""

    version: int
    state: str
    instances: list[VersionInstance]


class ModelPlacement(BaseModel):
    """A model's replicas setting (and whether it is the default) and where its versions are placed."""

    replicas: int
    default: bool = Field(description="true when the model has no setting of its own (CP_DEFAULT_REPLICAS)")
    pinned_aliases: list[str] = Field(default_factory=list, description="aliases kept resident")
    versions: list[VersionPlacement]
