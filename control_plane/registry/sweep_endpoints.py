"""The artifact store's garbage sweep, on request (admins only)."""

from __future__ import annotations

import functools
from dataclasses import asdict

from fastapi import APIRouter, Body, Depends
from starlette.concurrency import run_in_threadpool

from control_plane.auth.context import RequestContext, admin_context
from control_plane.dependencies import get_state
from control_plane.errors import ServiceUnavailable
from control_plane.registry.schemas import SweepOut, SweepRequest
from control_plane.state import AppState

router = APIRouter(tags=["artifacts"])


@router.post("/v1/artifacts/sweep", response_model=SweepOut)
async def sweep_artifacts(
    body: SweepRequest | None = Body(None),
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
) -> SweepOut:
    """Delete the stored artifacts no live version uses (older than the grace period) and report the live
    versions whose artifact is missing; `dry_run` deletes nothing. One sweep at a time across replicas
    (409 while one runs); 409 too when the store's marker names another registry. Audited with its
    figures, failed or not."""
    request = body or SweepRequest()
    sweeper = state.artifact_sweeper
    if sweeper is None:
        raise ServiceUnavailable("the artifact sweep is not running in this process", retry_after=5)
    report = await run_in_threadpool(
        functools.partial(
            sweeper.sweep,
            grace_s=request.grace_s,
            dry_run=request.dry_run,
            actor=ctx.principal,
            request_id=ctx.request_id,
        )
    )
    return SweepOut.model_validate(asdict(report))
