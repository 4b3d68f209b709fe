"""Tenant API types."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from control_plane.names import Name
from control_plane.timestamps import UtcDateTime

MAX_COUNT = 10_000_000  # the most models or versions a quota may allow
MAX_BYTES = 2**60  # the most artifact bytes (1 EiB)


class TenantCreate(BaseModel):
    """Body of POST /v1/tenants."""

    model_config = ConfigDict(extra="forbid")

    name: Name


class QuotaPatch(BaseModel):
    """A tenant's own quotas. A field left out keeps its value; null sets it back to the default
    (`CP_TENANT_MAX_*`)."""

    model_config = ConfigDict(extra="forbid")

    max_models: int | None = Field(None, ge=1, le=MAX_COUNT, strict=True, description="live models")
    max_versions: int | None = Field(
        None, ge=1, le=MAX_COUNT, strict=True, description="live (not deleted) versions, all models together"
    )
    max_artifact_bytes: int | None = Field(
        None, ge=1, le=MAX_BYTES, strict=True, description="bytes of the distinct artifacts live versions use"
    )


class TenantPatch(BaseModel):
    """Body of PATCH /v1/tenants/{t} (admins)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"quota": {"max_models": 50, "max_artifact_bytes": 10 * 1024**3}}]},
    )

    quota: QuotaPatch


class QuotaOut(BaseModel):
    """A tenant's quotas in force (its own, else the defaults); null: unlimited."""

    max_models: int | None
    max_versions: int | None
    max_artifact_bytes: int | None


class UsageOut(BaseModel):
    """What a tenant holds, as its quotas count it."""

    models: int
    versions: int
    artifact_bytes: int


class TenantOut(BaseModel):
    """A tenant, with its quotas and what it holds."""

    name: str
    created_at: UtcDateTime
    quota: QuotaOut
    usage: UsageOut
