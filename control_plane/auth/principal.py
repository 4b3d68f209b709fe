"""Who is calling: role, bound tenant and key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    """Roles, strongest first."""

    ADMIN = "admin"
    PUBLISHER = "publisher"
    CONSUMER = "consumer"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    role: Role
    tenant_id: int | None
    key_id: int | None
    label: str
    expires_at: datetime | None = None  # its key's expiry (None: never, or the bootstrap token)

    @property
    def is_admin(self) -> bool:
        """True for admin keys and the bootstrap admin token."""
        return self.role is Role.ADMIN
