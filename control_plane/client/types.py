"""What the API answers, as typed objects (unknown fields are kept, so newer servers still parse)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, PlainSerializer

# Written back as the API writes it (ISO 8601 with an explicit +00:00 offset), not pydantic's "Z".
Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str, when_used="json")]


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of what the server gave (timestamps as ISO 8601 strings; a field an older
        server did not send is not made up)."""
        return self.model_dump(mode="json", exclude_unset=True)


class TenantQuota(_Out):
    """A tenant's quotas in force; None: unlimited."""

    max_models: int | None
    max_versions: int | None
    max_artifact_bytes: int | None
    max_aliases: int | None = None  # (absent from a server older than these two quotas)
    max_keys: int | None = None


class TenantUsage(_Out):
    """What a tenant holds, as its quotas count it."""

    models: int
    versions: int
    artifact_bytes: int
    aliases: int | None = None  # (absent from a server older than these two quotas)
    keys: int | None = None


class TenantLimits(_Out):
    """A tenant's inference limits in force; None: unlimited."""

    rate_per_s: float | None
    burst: int
    max_concurrency: int | None


class Tenant(_Out):
    """A tenant, with its quotas, inference limits and what it holds (None from a server older than
    them)."""

    name: str
    created_at: Timestamp
    quota: TenantQuota | None = None
    limits: TenantLimits | None = None
    usage: TenantUsage | None = None


class Key(_Out):
    """An API key without its secret."""

    id: int
    prefix: str
    role: str
    description: str | None = None
    created_at: Timestamp
    revoked_at: Timestamp | None = None
    last_used_at: Timestamp | None = None
    expires_at: Timestamp | None = None


class CreatedKey(Key):
    """A new key; `key` is its secret, shown this one time."""

    key: str


class TensorSpec(_Out):
    """One input or output of a model's signature."""

    name: str
    datatype: str
    shape: list[int]
    optional: bool = False


class VersionSummary(_Out):
    """A version in a model listing."""

    version: int
    state: str
    created_at: Timestamp


class Model(_Out):
    """A model with its effective serving settings, versions and aliases."""

    name: str
    format: str
    serving: dict[str, Any]
    max_batch_size_auto: bool = True
    inputs: list[TensorSpec] | None = None
    outputs: list[TensorSpec] | None = None
    created_at: Timestamp
    versions: list[VersionSummary] = []
    aliases: dict[str, int] = {}


class Version(_Out):
    """A version: state (with Triton's message when it failed), artifact, signature, generated config."""

    version: int
    state: str
    state_message: str | None = None
    sha256: str
    size_bytes: int
    artifact_uri: str | None = None  # admins only
    triton_name: str | None = None  # admins only
    signature: dict[str, Any] = {}
    config: str | None = None
    serving: dict[str, Any] = {}
    resident_on: list[str] | None = None  # instances it is loaded on (servers with residency)
    memory_bytes: int | None = None  # measured or estimated memory, when known
    created_at: Timestamp
    updated_at: Timestamp


class AliasMove(_Out):
    """What a promotion or rollback did."""

    alias: str
    version: int
    previous_version: int | None = None
    action: str


class HistoryEntry(_Out):
    """One move of an alias."""

    action: str
    from_version: int | None = None
    to_version: int
    actor: str | None = None
    reason: str | None = None
    at: Timestamp


class Route(_Out):
    """One leg of a canary split."""

    version: int
    weight: int


class Shadow(_Out):
    """A share of an alias' traffic mirrored to a version."""

    version: int
    percent: int


class Traffic(_Out):
    """An alias' primary version, canary routes, shadow and shadow comparison statistics."""

    alias: str
    version: int
    routes: list[Route] = []
    shadow: Shadow | None = None
    shadow_stats: dict[str, Any] | None = None


class AuditEvent(_Out):
    """One audit event."""

    id: int
    created_at: Timestamp
    actor: str
    actor_key_id: int | None = None
    action: str
    tenant: str | None = None
    model: str | None = None
    target: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    outcome: str
    request_id: str | None = None


class Placement(_Out):
    """One version on one Triton instance: desired and observed state."""

    tenant: str
    model: str
    version: int
    triton_model: str
    desired: str
    observed: str
    message: str | None = None


class Instance(_Out):
    """A Triton instance of the fleet."""

    name: str
    http_url: str
    grpc_url: str
    origin: str
    state: str
    draining: bool = False
    last_seen_at: Timestamp | None = None
    last_error: str | None = None
    placements: list[Placement] = []


class Status(_Out):
    """Database, artifact store, Tritons, the embedded Triton's supervisor and the reconcile loop."""

    version: str
    database: dict[str, Any]
    artifact_store: dict[str, Any]
    tritons: list[dict[str, Any]] = []
    embedded_triton: dict[str, Any] | None = None
    reconciler: dict[str, Any] | None = None
    instances: list[Instance] = []


class MissingArtifact(_Out):
    """A live version whose artifact the store lacks."""

    tenant: str
    model: str
    version: int
    sha256: str


class Sweep(_Out):
    """What a sweep of the artifact store found and did (`POST /v1/artifacts/sweep`)."""

    dry_run: bool
    grace_s: float
    started_at: Timestamp
    seconds: float
    listed: int
    listed_bytes: int
    in_use: int
    unused: int
    unused_bytes: int
    recent: int
    deleted: int
    deleted_bytes: int
    taken: int
    leftovers_removed: int
    missing: int
    missing_versions: list[MissingArtifact] = []


class Prediction(_Out):
    """The answer of `/v1/predict`: which version answered and its outputs as nested lists."""

    model: str
    version: int
    outputs: dict[str, Any]
