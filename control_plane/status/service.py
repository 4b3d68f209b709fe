"""Probe the database, the artifact store and every Triton instance."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from control_plane import __version__
from control_plane.errors import AppError
from control_plane.fleet import service as fleet
from control_plane.fleet.embedded import EMBEDDED
from control_plane.fleet.schemas import InstanceOut
from control_plane.state import AppState
from control_plane.status.schemas import (
    ComponentStatus,
    LoadFailure,
    ReconcilerStatus,
    Status,
    SupervisorStatus,
    TritonStatus,
)


def database_status(state: AppState) -> ComponentStatus:
    """Whether the registry database answers a trivial query, through the pool of the process's own work
    (readiness must not fail because management requests hold every connection of theirs)."""
    try:
        with state.internal_engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return ComponentStatus(ok=False, detail=type(exc).__name__)
    return ComponentStatus(ok=True, detail=state.internal_engine.dialect.name)


def artifact_status(state: AppState) -> ComponentStatus:
    """Whether the artifact store answers."""
    try:
        state.artifacts.check()
    except AppError as exc:
        return ComponentStatus(ok=False, detail=exc.message)
    return ComponentStatus(ok=True, detail=state.settings.artifact_store.value)


def triton_statuses(state: AppState) -> list[TritonStatus]:
    """Each configured Triton instance with its readiness."""
    return [
        TritonStatus(
            name=t.name,
            http_url=t.http_url,
            grpc_url=t.grpc_url,
            state="ready" if t.health.is_ready() else "unavailable",
            embedded=t.name == EMBEDDED and state.supervisor is not None,
        )
        for t in state.tritons
    ]


def supervisor_status(state: AppState) -> SupervisorStatus | None:
    """The embedded Triton's supervision, if there is one."""
    if state.supervisor is None:
        return None
    seen = state.supervisor.status()
    return SupervisorStatus(
        state=seen.state.value,
        pid=seen.pid,
        restarts=seen.restarts,
        failures_in_a_row=seen.failures_in_a_row,
        last_exit_code=seen.last_exit_code,
        last_exit_at=seen.last_exit_at,
        message=seen.message,
    )


def reconciler_status(state: AppState) -> ReconcilerStatus | None:
    """The reconcile loop's leadership, last pass and failing loads."""
    if state.reconciler is None:
        return None
    observed = state.reconciler.observed
    failing = [
        LoadFailure(
            instance=f.instance, triton_model=f.triton_name, message=f.message, retry_in_s=f.retry_in_s
        )
        for f in list(observed.failures.values())
    ]
    return ReconcilerStatus(
        leader=observed.leader,
        last_pass_at=observed.last_pass_at,
        last_pass_s=observed.last_pass_s,
        failing=failing,
    )


def fleet_instances(state: AppState) -> list[InstanceOut]:
    """Every instance with its placements (empty if the registry does not answer)."""
    try:
        with state.session_factory() as session:
            return fleet.list_instances(session, state=state)
    except SQLAlchemyError:
        return []


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
        embedded_triton=supervisor_status(state),
        reconciler=reconciler_status(state),
        instances=fleet_instances(state),
    )
