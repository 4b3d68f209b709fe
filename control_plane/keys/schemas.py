"""API key types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from control_plane.timestamps import UtcDateTime


class KeyCreate(BaseModel):
    """Body of POST /v1/tenants/{t}/keys."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["publisher", "consumer"]
    description: str | None = Field(None, max_length=200)


class KeyOut(BaseModel):
    """A key without its secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    prefix: str
    role: str
    description: str | None
    created_at: UtcDateTime
    revoked_at: UtcDateTime | None
    last_used_at: UtcDateTime | None


class KeyCreated(KeyOut):
    """A new key, with the secret shown this one time."""

    key: str
