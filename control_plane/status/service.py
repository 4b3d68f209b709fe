"""Probe the database, the artifact store and every Triton instance."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from control_plane import __version__
from control_plane.errors import AppError
from control_plane.state import AppState
from control_plane.status.schemas import ComponentStatus, Status, TritonStatus


def database_status(state: AppState) -> ComponentStatus:
    """Whether the registry database answers a trivial query."""
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return ComponentStatus(ok=False, detail=type(exc).__name__)
    return ComponentStatus(ok=True, detail=state.engine.dialect.name)


def artifact_status(state: AppState) -> ComponentStatus:
    """Whether the artifact store answers."""
    try:
        state.artifacts.check()
    except AppError as exc:
        return ComponentStatus(ok=False, detail=exc.message)
    return ComponentStatus(ok=True, detail=state.settings.artifact_store.value)


def triton_statuses(state: AppState) -> list[TritonStatus]:
    """Each configured Triton instance with its readiness."""
    embedded_url = state.embedded_triton.http_url if state.embedded_triton else None
    return [
        TritonStatus(
            name=t.name,
            http_url=t.http_url,
            grpc_url=t.grpc_url,
            state="ready" if t.health.is_ready() else "unavailable",
            embedded=t.http_url == embedded_url,
        )
        for t in state.tritons
    ]


def is_ready(state: AppState) -> bool:
    """Ready when the database answers and at least one Triton is ready."""
    return database_status(state).ok and any(t.health.is_ready() for t in state.tritons)


def full_status(state: AppState) -> Status:
    """Status of every dependency."""
    return Status(
        version=__version__,
        database=database_status(state),
        artifact_store=artifact_status(state),
        tritons=triton_statuses(state),
    )
