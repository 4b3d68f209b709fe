"""Liveness, readiness and the admin status page."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from control_plane.auth.dependencies import require_admin
from control_plane.dependencies import get_state
from control_plane.state import AppState
from control_plane.status import service
from control_plane.status.schemas import Status

router = APIRouter()


@router.get("/v2/health/live", tags=["health"])
async def live() -> Response:
    """200 while the process serves requests."""
    return Response(status_code=200)


@router.get("/v2/health/ready", tags=["health"])
async def ready(state: AppState = Depends(get_state)) -> Response:
    """200 when the database answers and a Triton is ready, 503 otherwise."""
    ok = await run_in_threadpool(service.is_ready, state)
    return Response(status_code=200 if ok else 503, headers=None if ok else {"Retry-After": "1"})


@router.get("/v1/status", response_model=Status, tags=["admin"], dependencies=[Depends(require_admin)])
async def status(state: AppState = Depends(get_state)) -> Status:
    """Database, artifact store and each Triton instance (admins only)."""
    return await run_in_threadpool(service.full_status, state)
