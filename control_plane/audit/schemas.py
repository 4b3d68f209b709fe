"""Audit API types."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from control_plane.timestamps import UtcDateTime


class AuditEventOut(BaseModel):
    """One audit event."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: UtcDateTime
    actor: str
    actor_key_id: int | None
    action: str
    tenant: str | None
    model: str | None
    target: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    outcome: str
    request_id: str | None
