"""Builders for registry rows, so tests state only what they care about."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy.orm import Session

from control_plane.db.models import ApiKey, Model, ModelVersion, Tenant


def unique_name(prefix: str = "t") -> str:
    """A fresh, valid registry name."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def tenant(session: Session, **overrides: Any) -> Tenant:
    """Insert a tenant."""
    row = Tenant(**{"name": unique_name("tenant"), **overrides})
    session.add(row)
    session.flush()
    return row


def api_key(session: Session, *, tenant_row: Tenant | None, **overrides: Any) -> ApiKey:
    """Insert an API key row (hash of a random secret)."""
    values = {
        "tenant_id": tenant_row.id if tenant_row else None,
        "role": "consumer",
        "prefix": uuid.uuid4().hex[:12],
        "key_hash": hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        **overrides,
    }
    row = ApiKey(**values)
    session.add(row)
    session.flush()
    return row


def model(session: Session, *, tenant_row: Tenant, **overrides: Any) -> Model:
    """Insert a model of `tenant_row`."""
    row = Model(**{"tenant_id": tenant_row.id, "name": unique_name("m"), "format": "onnx", **overrides})
    session.add(row)
    session.flush()
    return row


def version(session: Session, *, model_row: Model, number: int = 1, **overrides: Any) -> ModelVersion:
    """Insert version `number` of `model_row`."""
    digest = hashlib.sha256(f"{model_row.id}-{number}-{uuid.uuid4()}".encode()).hexdigest()
    values = {
        "model_id": model_row.id,
        "version": number,
        "triton_name": f"x--{model_row.name}--v{number}-{uuid.uuid4().hex[:6]}",
        "artifact_uri": f"sha256/{digest[:2]}/{digest}",
        "sha256": digest,
        "size_bytes": 10,
        **overrides,
    }
    row = ModelVersion(**values)
    session.add(row)
    session.flush()
    return row
