"""Lifecycle API types."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from control_plane.lifecycle.shadow import ShadowStats
from control_plane.registry.schemas import VersionNumber
from control_plane.timestamps import UtcDateTime


class Promote(BaseModel):
    """Body of PUT .../aliases/{a}."""

    model_config = ConfigDict(extra="forbid")

    version: VersionNumber
    reason: str | None = Field(None, max_length=500)


class Rollback(BaseModel):
    """Body of POST .../aliases/{a}/rollback (optional)."""

    model_config = ConfigDict(extra="forbid")

    to_version: VersionNumber | None = None
    reason: str | None = Field(None, max_length=500)


class AliasMove(BaseModel):
    """What a promotion or rollback did."""

    alias: str
    version: int
    previous_version: int | None
    action: str


class HistoryEntry(BaseModel):
    """One move of an alias."""

    action: str
    from_version: int | None
    to_version: int
    actor: str | None
    reason: str | None
    at: UtcDateTime


class Route(BaseModel):
    """One leg of a canary split."""

    model_config = ConfigDict(extra="forbid")

    version: VersionNumber
    weight: int = Field(ge=0, le=100, strict=True)


class Shadow(BaseModel):
    """Mirror a share of the alias' traffic to a version."""

    model_config = ConfigDict(extra="forbid")

    version: VersionNumber
    percent: int = Field(ge=1, le=100, strict=True)


class Traffic(BaseModel):
    """Body of PUT .../aliases/{a}/traffic: canary weights (summing to 100) and an optional shadow."""

    model_config = ConfigDict(extra="forbid")

    routes: list[Route] = Field(default_factory=list, max_length=10)
    shadow: Shadow | None = None

    @model_validator(mode="after")
    def _weights(self) -> Traffic:
        if self.routes:
            versions = [r.version for r in self.routes]
            if len(set(versions)) != len(versions):
                raise ValueError("each version may appear once in routes")
            if sum(r.weight for r in self.routes) != 100:
                raise ValueError("route weights must add up to 100")
        return self


class TrafficOut(BaseModel):
    """An alias' traffic: primary version, canary routes, shadow and its statistics."""

    alias: str
    version: int
    routes: list[Route]
    shadow: Shadow | None
    shadow_stats: ShadowStats | None = None
