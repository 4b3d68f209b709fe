"""Tenant API types."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from control_plane.names import Name


class TenantCreate(BaseModel):
    """Body of POST /v1/tenants."""

    model_config = ConfigDict(extra="forbid")

    name: Name


class TenantOut(BaseModel):
    """A tenant."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    created_at: datetime
