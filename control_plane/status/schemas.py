"""Status API types."""

from __future__ import annotations

from pydantic import BaseModel

from control_plane.fleet.schemas import InstanceOut
from control_plane.timestamps import UtcDateTime


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


class SupervisorStatus(BaseModel):
    """The embedded Triton's supervisor: `failed` means it gave up restarting (see `message`)."""

    state: str
    pid: int | None
    restarts: int
    failures_in_a_row: int
    last_exit_code: int | None
    last_exit_at: UtcDateTime | None
    message: str | None


class LoadFailure(BaseModel):
    """A version the reconcile loop could not load on an instance, and when it tries again."""

    instance: str
    triton_model: str
    message: str
    retry_in_s: float


class ReconcilerStatus(BaseModel):
    """The reconcile loop: whether this replica leads it, its last pass, what keeps failing."""

    leader: bool
    last_pass_at: UtcDateTime | None
    last_pass_s: float | None = None
    failing: list[LoadFailure]


class Status(BaseModel):
    """The whole picture for admins."""

    version: str
    database: ComponentStatus
    artifact_store: ComponentStatus
    tritons: list[TritonStatus]
    embedded_triton: SupervisorStatus | None = None
    reconciler: ReconcilerStatus | None = None
    instances: list[InstanceOut] = []  # the fleet, as GET /v1/instances shows it
