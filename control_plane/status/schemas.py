"""Status API types."""

from __future__ import annotations

from pydantic import BaseModel


class ComponentStatus(BaseModel):
    """One dependency and whether it answers."""

    ok: bool
    detail: str | None = None


class TritonStatus(BaseModel):
    """One Triton instance."""

    name: str
    http_url: str
    grpc_url: str
    state: str
    embedded: bool


class Status(BaseModel):
    """The whole picture for admins."""

    version: str
    database: ComponentStatus
    artifact_store: ComponentStatus
    tritons: list[TritonStatus]
