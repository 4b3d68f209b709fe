"""Fleet endpoints (admins only): the Triton instances, and a model's replicas and placements."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session

from control_plane.auth.context import RequestContext, admin_context
from control_plane.dependencies import get_session, get_state
from control_plane.fleet import service
from control_plane.fleet.schemas import (
    InstanceCreate,
    InstanceOut,
    InstanceUpdate,
    ModelPlacement,
    ReplicasUpdate,
)
from control_plane.registry import service as models
from control_plane.state import AppState
from control_plane.tenants import service as tenants

router = APIRouter(tags=["fleet"])


@router.get("/v1/instances", response_model=list[InstanceOut])
def list_instances(
    _: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> list[InstanceOut]:
    """Every Triton instance: state, URLs, placements (desired and observed), last pass and last error."""
    return service.list_instances(session, state=state)


@router.post("/v1/instances", status_code=201, response_model=InstanceOut)
def create_instance(
    body: InstanceCreate,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> InstanceOut:
    """Add a Triton server; the reconcile loop probes it and places new versions on it (audited)."""
    row = service.create_instance(session, ctx=ctx, body=body)
    return service.describe(row, state=state, session=session)


@router.get("/v1/instances/{instance}", response_model=InstanceOut)
def get_instance(
    instance: str,
    _: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> InstanceOut:
    """One instance with its placements."""
    return service.get_instance(session, state=state, name=instance)


@router.put("/v1/instances/{instance}", response_model=InstanceOut)
def update_instance(
    instance: str,
    body: InstanceUpdate,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> InstanceOut:
    """The instance's new address (it restarted elsewhere): its placements are loaded there (audited)."""
    row = service.update_instance(session, ctx=ctx, name=instance, body=body)
    return service.describe(row, state=state, session=session)


@router.delete("/v1/instances/{instance}", status_code=202, response_model=InstanceOut)
def drain_instance(
    instance: str,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> InstanceOut:
    """Drain, then remove: its versions are loaded elsewhere, requests move there, then they are
    unloaded from it and it leaves the fleet (GET answers 404 once it has). 409 for the embedded
    Triton or the last instance. An instance from CP_TRITON_URLS comes back at the next start-up
    unless the setting changes too."""
    row = service.drain_instance(session, ctx=ctx, name=instance)
    return service.describe(row, state=state, session=session)


@router.get("/v1/tenants/{tenant}/models/{model}/placement", response_model=ModelPlacement)
def get_placement(
    tenant: str,
    model: str,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> ModelPlacement:
    """The model's replicas and the instances each of its versions is placed on."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = models.get_model(session, tenant=owner, name=model)
    return service.model_placement(session, state=state, model=found)


@router.put("/v1/tenants/{tenant}/models/{model}/placement", response_model=ModelPlacement)
def set_placement(
    tenant: str,
    model: str,
    body: ReplicasUpdate,
    ctx: RequestContext = Depends(admin_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> ModelPlacement:
    """Set the model's replicas (each servable version is kept on that many instances, at most the
    fleet's size, added ones loaded before any is taken away) and/or its pinned aliases (their
    versions stay resident, never evicted for memory). Audited."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = models.get_model(session, tenant=owner, name=model, lock=True)
    if body.replicas is not None:
        service.set_replicas(session, ctx=ctx, tenant=owner, model=found, replicas=body.replicas)
    if body.pinned_aliases is not None:
        service.set_pins(session, ctx=ctx, tenant=owner, model=found, aliases=body.pinned_aliases)
    return service.model_placement(session, state=state, model=found)
