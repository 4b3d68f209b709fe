"""Tenant API types."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.names import Name
from control_plane.settings import MIN_RATE
from control_plane.timestamps import UtcDateTime

MAX_COUNT = 10_000_000  # the most models, versions, aliases or keys a quota may allow
MAX_BYTES = 2**60  # the most artifact bytes (1 EiB)
MAX_RATE = 1_000_000.0  # the most inference requests a second a tenant's limit may allow
MAX_LIMIT = 1_000_000  # the largest burst or number of requests in flight


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
    max_aliases: int | None = Field(
        None, ge=1, le=MAX_COUNT, strict=True, description="aliases of its live models, all together"
    )
    max_keys: int | None = Field(
        None, ge=1, le=MAX_COUNT, strict=True, description="API keys neither revoked nor expired"
    )

    @model_validator(mode="after")
    def _something(self) -> QuotaPatch:
        if not self.model_fields_set:
            raise ValueError(
                "give max_models, max_versions, max_artifact_bytes, max_aliases or max_keys "
                "(null: the default)"
            )
        return self


class LimitsPatch(BaseModel):
    """A tenant's own inference limits. A field left out keeps its value; null sets it back to the default
    (`CP_TENANT_RATE_LIMIT`, `CP_TENANT_BURST`, `CP_TENANT_MAX_CONCURRENCY`); 0 is unlimited."""

    model_config = ConfigDict(extra="forbid")

    rate_per_s: float | None = Field(
        None,
        ge=0,
        le=MAX_RATE,
        allow_inf_nan=False,
        strict=True,
        description="inference requests a second (0: unlimited)",
    )
    burst: int | None = Field(
        None, ge=1, le=MAX_LIMIT, strict=True, description="requests allowed at once above the rate"
    )
    max_concurrency: int | None = Field(
        None, ge=0, le=MAX_LIMIT, strict=True, description="inference requests in flight (0: unlimited)"
    )

    @model_validator(mode="after")
    def _something(self) -> LimitsPatch:
        if not self.model_fields_set:
            raise ValueError("give rate_per_s, burst or max_concurrency (null: the default)")
        if self.rate_per_s is not None and 0 < self.rate_per_s < MIN_RATE:
            raise ValueError(f"rate_per_s: 0 (unlimited) or at least {MIN_RATE:g} requests a second")
        return self


class TenantPatch(BaseModel):
    """Body of PATCH /v1/tenants/{t} (admins): its quotas, its inference limits, or both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"quota": {"max_models": 50, "max_artifact_bytes": 10 * 1024**3}},
                {"limits": {"rate_per_s": 200, "burst": 400, "max_concurrency": 64}},
            ]
        },
    )

    quota: QuotaPatch | None = None
    limits: LimitsPatch | None = None

    @model_validator(mode="after")
    def _something(self) -> TenantPatch:
        if self.quota is None and self.limits is None:
            raise ValueError("give 'quota', 'limits' or both")
        return self


class QuotaOut(BaseModel):
    """A tenant's quotas in force (its own, else the defaults); null: unlimited."""

    max_models: int | None
    max_versions: int | None
    max_artifact_bytes: int | None
    max_aliases: int | None
    max_keys: int | None


class LimitsOut(BaseModel):
    """A tenant's inference limits in force (its own, else the defaults); null: unlimited."""

    rate_per_s: float | None
    burst: int
    max_concurrency: int | None


class UsageOut(BaseModel):
    """What a tenant holds, as its quotas count it."""

    models: int
    versions: int
    artifact_bytes: int
    aliases: int
    keys: int


class TenantOut(BaseModel):
    """A tenant, with its quotas and what it holds."""

    name: str
    created_at: UtcDateTime
    quota: QuotaOut
    limits: LimitsOut
    usage: UsageOut
