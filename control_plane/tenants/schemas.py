"""Tenant API types."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from control_plane.names import Name
from control_plane.timestamps import UtcDateTime


class TenantCreate(BaseModel):
    """Body of POST /v1/tenants."""

    model_config = ConfigDict(extra="forbid")

    name: Name


class TenantOut(BaseModel):
    """A tenant."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    created_at: UtcDateTime
