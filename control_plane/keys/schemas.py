"""API key types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from control_plane.timestamps import AwareDateTime, UtcDateTime


class AdminKeyCreate(BaseModel):
    """Body of POST /v1/keys: an admin key, bound to no tenant."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=200, description="Who or what holds the key.")
    expires_at: AwareDateTime | None = Field(
        None,
        description="When the key stops working (ISO 8601, in the future). Left out: never, or at the "
        "longest CP_KEY_MAX_TTL_S allows when that is set.",
    )


class KeyCreate(AdminKeyCreate):
    """Body of POST /v1/tenants/{t}/keys."""

    role: Literal["publisher", "consumer"]


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
    expires_at: UtcDateTime | None = None


class KeyCreated(KeyOut):
    """A new key, with the secret shown this one time."""

    key: str
