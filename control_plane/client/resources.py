"""Tenants, keys, models, audit events and Triton instances."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from control_plane.client.connection import Connection, path
from control_plane.client.types import AuditEvent, CreatedKey, Instance, Key, Model, Sweep, Tenant

MAX_PAGE = 1000  # the most items the server gives in one page (`paging.MAX_LIMIT`)


class Tenants:
    """`/v1/tenants`."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def create(self, name: str) -> Tenant:
        """Create a tenant (admins)."""
        return Tenant.model_validate(self._conn.json("POST", "/v1/tenants", json={"name": name}))

    def list(self) -> list[Tenant]:
        """The tenants the key may see (its own one for tenant keys)."""
        return [Tenant.model_validate(t) for t in self._conn.listing("/v1/tenants")]

    def get(self, name: str) -> Tenant:
        """One tenant."""
        return Tenant.model_validate(self._conn.json("GET", path("v1", "tenants", name)))

    def delete(self, name: str) -> None:
        """Offboard a tenant (admins): its models deleted and unloaded, its keys revoked; not undone, and
        the name is not reused."""
        self._conn.request("DELETE", path("v1", "tenants", name))

    def set_quota(self, name: str, **limits: int | None) -> Tenant:
        """Set the tenant's own quotas (admins): `max_models`, `max_versions`, `max_artifact_bytes`,
        `max_aliases`, `max_keys`; one left out keeps its value, None sets it back to the server's default."""
        body = {"quota": limits}
        return Tenant.model_validate(self._conn.json("PATCH", path("v1", "tenants", name), json=body))

    def set_limits(self, name: str, **limits: float | None) -> Tenant:
        """Set the tenant's own inference limits (admins): `rate_per_s`, `burst`, `max_concurrency` (0:
        unlimited); one left out keeps its value, None sets it back to the server's default."""
        body = {"limits": limits}
        return Tenant.model_validate(self._conn.json("PATCH", path("v1", "tenants", name), json=body))


class Keys:
    """`/v1/tenants/{t}/keys`, and `/v1/keys` for admin keys (admins)."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def create(
        self, tenant: str, *, role: str, description: str | None = None, expires_at: datetime | None = None
    ) -> CreatedKey:
        """A new `publisher` or `consumer` key bound to the tenant; its secret is in `.key` only now. It
        works until `expires_at` (an aware datetime; None: never, or the server's longest key life)."""
        body = _key_body(description, expires_at, role=role)
        return CreatedKey.model_validate(
            self._conn.json("POST", path("v1", "tenants", tenant, "keys"), json=body)
        )

    def create_admin(
        self, *, description: str | None = None, expires_at: datetime | None = None
    ) -> CreatedKey:
        """A new admin key, bound to no tenant (one per operator or system: the audit tells them apart)."""
        return CreatedKey.model_validate(
            self._conn.json("POST", "/v1/keys", json=_key_body(description, expires_at))
        )

    def list_admin(self) -> list[Key]:
        """The admin keys, without secrets (not the bootstrap CP_ADMIN_TOKEN)."""
        return [Key.model_validate(k) for k in self._conn.listing("/v1/keys")]

    def revoke_admin(self, key_id: int) -> Key:
        """Revoke an admin key."""
        return Key.model_validate(self._conn.json("DELETE", path("v1", "keys", key_id)))

    def list(self, tenant: str) -> list[Key]:
        """The tenant's keys, without secrets."""
        return [Key.model_validate(k) for k in self._conn.listing(path("v1", "tenants", tenant, "keys"))]

    def revoke(self, tenant: str, key_id: int) -> Key:
        """Revoke a key: requests with it get 401 from then on."""
        return Key.model_validate(self._conn.json("DELETE", path("v1", "tenants", tenant, "keys", key_id)))


def _key_body(description: str | None, expires_at: datetime | None, **fields: str) -> dict[str, Any]:
    body: dict[str, Any] = {**fields, "description": description}
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware: datetime.now(UTC) + timedelta(days=30)")
        body["expires_at"] = expires_at.isoformat()
    return body


class Models:
    """`/v1/tenants/{t}/models`."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def create(self, tenant: str, *, name: str, format: str, **spec: Any) -> Model:
        """Register a model: `format` is onnx, torchscript or python; `spec` as the API takes it
        (max_batch_size, dynamic_batching, instance_group, inputs, outputs, warmup)."""
        body = {"name": name, "format": format, **{k: v for k, v in spec.items() if v is not None}}
        return Model.model_validate(
            self._conn.json("POST", path("v1", "tenants", tenant, "models"), json=body)
        )

    def list(self, tenant: str) -> list[Model]:
        """The tenant's models."""
        return [Model.model_validate(m) for m in self._conn.listing(path("v1", "tenants", tenant, "models"))]

    def get(self, tenant: str, name: str) -> Model:
        """One model with its serving settings, versions and aliases."""
        return Model.model_validate(self._conn.json("GET", path("v1", "tenants", tenant, "models", name)))

    def update(self, tenant: str, name: str, **patch: Any) -> Model:
        """Change max_batch_size, dynamic_batching, instance_group or warmup for new versions
        (None puts a field back to automatic)."""
        url = path("v1", "tenants", tenant, "models", name)
        return Model.model_validate(self._conn.json("PATCH", url, json=patch))

    def delete(self, tenant: str, name: str) -> None:
        """Delete a model; its versions are unloaded and retired."""
        self._conn.request("DELETE", path("v1", "tenants", tenant, "models", name))


class Audit:
    """`/v1/audit` (admins)."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def list(
        self,
        *,
        tenant: str | None = None,
        model: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        """The newest `limit` audit events, newest first, filtered."""
        params = {
            "tenant": tenant,
            "model": model,
            "action": action,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "limit": min(limit, MAX_PAGE),
        }
        found = self._conn.listing("/v1/audit", params=params, most=limit)
        return [AuditEvent.model_validate(e) for e in found]


class Instances:
    """`/v1/instances` (admins): the Triton fleet."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def list(self) -> list[Instance]:
        """Every instance with its placements."""
        return [Instance.model_validate(i) for i in self._conn.json("GET", "/v1/instances")]

    def get(self, name: str) -> Instance:
        """One instance."""
        return Instance.model_validate(self._conn.json("GET", path("v1", "instances", name)))

    def create(self, *, name: str, http_url: str, grpc_url: str | None = None) -> Instance:
        """Add a Triton server to the fleet."""
        body = {"name": name, "http_url": http_url, "grpc_url": grpc_url}
        return Instance.model_validate(self._conn.json("POST", "/v1/instances", json=body))

    def update(self, name: str, *, http_url: str, grpc_url: str | None = None) -> Instance:
        """The instance's new address."""
        body = {"http_url": http_url, "grpc_url": grpc_url}
        return Instance.model_validate(self._conn.json("PUT", path("v1", "instances", name), json=body))

    def drain(self, name: str) -> Instance:
        """Drain, then remove an instance."""
        return Instance.model_validate(self._conn.json("DELETE", path("v1", "instances", name)))

    def placement(self, tenant: str, model: str) -> dict[str, Any]:
        """A model's replicas and where its versions are placed."""
        result: dict[str, Any] = self._conn.json(
            "GET", path("v1", "tenants", tenant, "models", model, "placement")
        )
        return result

    def set_replicas(self, tenant: str, model: str, replicas: int) -> dict[str, Any]:
        """Keep each servable version of the model on `replicas` instances."""
        url = path("v1", "tenants", tenant, "models", model, "placement")
        result: dict[str, Any] = self._conn.json("PUT", url, json={"replicas": replicas})
        return result


class Artifacts:
    """`/v1/artifacts` (admins): the artifact store."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def sweep(self, *, dry_run: bool = False, grace_s: float | None = None, timeout: float = 600.0) -> Sweep:
        """Delete the stored artifacts no live version uses, older than `grace_s` (the server's default when
        None); `dry_run` deletes nothing. Also names live versions whose artifact is missing."""
        body: dict[str, Any] = {"dry_run": dry_run}
        if grace_s is not None:
            body["grace_s"] = grace_s
        answer = self._conn.json("POST", "/v1/artifacts/sweep", json=body, timeout=timeout)
        return Sweep.model_validate(answer)
