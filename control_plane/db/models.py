"""Registry tables: tenants, keys, models, versions, aliases, routes, history, audit, fleet."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from control_plane.db.base import Base, BigId, utcnow_column

ROLES = ("admin", "publisher", "consumer")
FORMATS = ("onnx", "torchscript", "python")
VERSION_STATES = ("registered", "loading", "ready", "failed", "unloaded", "retired")
ROUTE_KINDS = ("weighted", "shadow")
INSTANCE_STATES = ("unknown", "ready", "unavailable")
INSTANCE_ORIGINS = ("settings", "api", "embedded")
PLACEMENT_STATES = ("loading", "ready", "failed", "unloading", "unloaded")
PLACEMENT_DESIRED = ("ready", "absent")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _name_check(column: str = "name") -> CheckConstraint:
    # LENGTH works on both Postgres and SQLite; the full pattern is enforced by the API.
    return CheckConstraint(f"length({column}) BETWEEN 1 AND 63", name=f"{column}_length")


class Tenant(Base):
    __tablename__ = "tenants"
    __table_args__ = (UniqueConstraint("name"), _name_check())

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = utcnow_column()
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Quotas (tenants/quota.py): the most live models, live versions, distinct artifact bytes, aliases of
    # its live models and live API keys; NULL takes the settings' default.
    max_models: Mapped[int | None] = mapped_column()
    max_versions: Mapped[int | None] = mapped_column()
    max_artifact_bytes: Mapped[int | None] = mapped_column(BigId)
    max_aliases: Mapped[int | None] = mapped_column()
    max_keys: Mapped[int | None] = mapped_column()
    # Its own inference limits (dataplane/limits.py): requests/s, the bucket's burst, requests in flight;
    # NULL takes the settings' default (CP_TENANT_*), 0 means unlimited.
    inference_rate_limit: Mapped[float | None] = mapped_column()
    inference_burst: Mapped[int | None] = mapped_column()
    inference_max_concurrency: Mapped[int | None] = mapped_column()

    models: Mapped[list[Model]] = relationship(back_populates="tenant", lazy="raise")


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("prefix"),
        CheckConstraint(_in("role", ROLES), name="role"),
        CheckConstraint("role = 'admin' OR tenant_id IS NOT NULL", name="tenant_bound"),
        CheckConstraint("length(key_hash) = 64", name="key_hash_length"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = utcnow_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # None: never


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (
        # Unique among live models only: a deleted model's name can be registered again.
        Index(
            "uq_models_tenant_id_name",
            "tenant_id",
            "name",
            unique=True,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        CheckConstraint(_in("format", FORMATS), name="format"),
        CheckConstraint("max_batch_size >= 0", name="max_batch_size"),
        _name_check(),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"))
    name: Mapped[str] = mapped_column(String(63))
    format: Mapped[str] = mapped_column(String(16))
    max_batch_size: Mapped[int | None] = mapped_column()
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Aliases whose versions stay resident (never evicted for memory); None or [] pins nothing.
    pinned_aliases: Mapped[list[Any] | None] = mapped_column()
    created_at: Mapped[datetime] = utcnow_column()
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    tenant: Mapped[Tenant] = relationship(back_populates="models", lazy="raise")
    versions: Mapped[list[ModelVersion]] = relationship(back_populates="model", lazy="raise")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        UniqueConstraint("triton_name"),
        CheckConstraint("version > 0", name="version_positive"),
        CheckConstraint("size_bytes >= 0", name="size_nonnegative"),
        CheckConstraint("length(sha256) = 64", name="sha256_length"),
        CheckConstraint(_in("state", VERSION_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="RESTRICT"))
    version: Mapped[int] = mapped_column()
    triton_name: Mapped[str] = mapped_column(String(200))
    artifact_uri: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigId)
    signature: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config_text: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="registered")
    state_message: Mapped[str | None] = mapped_column(Text)
    created_by_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    # When the last alias or traffic route let go of this version; it is unloaded keep-warm seconds later.
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Residency: memory it takes on an instance (measured: `triton` statistics or `stub` processes;
    # else `estimate`), how long Triton took to load it, memory an unload did not give back.
    memory_bytes: Mapped[int | None] = mapped_column(BigId)
    memory_source: Mapped[str | None] = mapped_column(String(16))
    load_seconds: Mapped[float | None] = mapped_column()
    memory_unreturned_bytes: Mapped[int | None] = mapped_column(BigId)
    created_at: Mapped[datetime] = utcnow_column()
    updated_at: Mapped[datetime] = utcnow_column()

    model: Mapped[Model] = relationship(back_populates="versions", lazy="raise")


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name"), _name_check())

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    created_at: Mapped[datetime] = utcnow_column()
    updated_at: Mapped[datetime] = utcnow_column()

    routes: Mapped[list[AliasRoute]] = relationship(back_populates="alias", lazy="raise")


class AliasRoute(Base):
    """A canary split (weighted) or a traffic mirror (shadow) on an alias."""

    __tablename__ = "alias_routes"
    __table_args__ = (
        UniqueConstraint("alias_id", "version_id", "kind"),
        CheckConstraint(_in("kind", ROUTE_KINDS), name="kind"),
        CheckConstraint("weight BETWEEN 0 AND 100", name="weight_range"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    kind: Mapped[str] = mapped_column(String(16))
    weight: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = utcnow_column()

    alias: Mapped[Alias] = relationship(back_populates="routes", lazy="raise")


class AliasHistory(Base):
    __tablename__ = "alias_history"
    __table_args__ = (
        CheckConstraint(_in("action", ("promote", "rollback")), name="action"),
        Index("ix_alias_history_alias_id_created_at", "alias_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"))
    from_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    to_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    action: Mapped[str] = mapped_column(String(16))
    actor_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    actor: Mapped[str | None] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = utcnow_column()


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint(_in("outcome", ("success", "failure")), name="outcome"),
        Index("ix_audit_events_tenant_created_at", "tenant", "created_at"),
        Index("ix_audit_events_action_created_at", "action", "created_at"),
        Index("ix_audit_events_created_at_id", "created_at", "id"),  # the listing's order and cursor
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = utcnow_column()
    actor_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str | None] = mapped_column(String(63))
    model: Mapped[str | None] = mapped_column(String(63))
    target: Mapped[str] = mapped_column(String(300))
    before: Mapped[dict[str, Any] | None] = mapped_column()
    after: Mapped[dict[str, Any] | None] = mapped_column()
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    request_id: Mapped[str | None] = mapped_column(String(64))


class TritonInstance(Base):
    """A Triton server of the fleet: a stable name, its current URLs, health as last observed."""

    __tablename__ = "triton_instances"
    __table_args__ = (
        UniqueConstraint("name"),
        UniqueConstraint("http_url"),
        CheckConstraint(_in("state", INSTANCE_STATES), name="state"),
        CheckConstraint(_in("origin", INSTANCE_ORIGINS), name="origin"),
        CheckConstraint(
            "memory_budget_bytes IS NULL OR memory_budget_bytes > 0", name="memory_budget_positive"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    http_url: Mapped[str] = mapped_column(String(300))
    grpc_url: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(16), default="unknown")
    # Where the instance comes from: CP_TRITON_URLS, the admin API, or the bundled Triton of a process.
    origin: Mapped[str] = mapped_column(String(16), default="settings", server_default="settings")
    memory_budget_bytes: Mapped[int | None] = mapped_column(BigId)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_reconciled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set by DELETE /v1/instances/{name}: its placements move elsewhere, then the row is removed.
    draining_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = utcnow_column()


class Placement(Base):
    """One version on one Triton instance: where the reconciler wants it, and what it last saw there."""

    __tablename__ = "placements"
    __table_args__ = (
        UniqueConstraint("instance_id", "version_id"),
        CheckConstraint(_in("state", PLACEMENT_STATES), name="state"),
        CheckConstraint(_in("desired", PLACEMENT_DESIRED), name="desired"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("triton_instances.id", ondelete="CASCADE"))
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"), index=True)
    desired: Mapped[str] = mapped_column(String(16), default="ready", server_default="ready")
    state: Mapped[str] = mapped_column(String(16))  # observed
    message: Mapped[str | None] = mapped_column(Text)
    loaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = utcnow_column()


class ModelReplicas(Base):
    """How many instances serve each servable version of a model (no row: the default setting)."""

    __tablename__ = "model_replicas"
    __table_args__ = (CheckConstraint("replicas BETWEEN 1 AND 64", name="replicas_range"),)

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    replicas: Mapped[int] = mapped_column()
    updated_at: Mapped[datetime] = utcnow_column()


class RegistryIdentity(Base):
    """The registry's random id (one row, written by its migration): the artifact store's marker names
    the registry it belongs to, so no other registry's sweep or clean-up deletes from it."""

    __tablename__ = "registry_identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = utcnow_column()
