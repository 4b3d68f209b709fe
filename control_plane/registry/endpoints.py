"""Model, version and alias endpoints (thin: parse, call one service function, return)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from control_plane.auth.context import RequestContext, request_context
from control_plane.dependencies import get_session, get_state
from control_plane.errors import InvalidRequest
from control_plane.registry import service, versions
from control_plane.registry.schemas import MAX_VERSION, ModelCreate, ModelOut, VersionOut
from control_plane.state import AppState
from control_plane.tenants import service as tenants

router = APIRouter(prefix="/v1/tenants/{tenant}/models", tags=["models"])
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.post("", status_code=201, response_model=ModelOut)
def create_model(
    tenant: str,
    body: ModelCreate,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> ModelOut:
    """Register a model (Python-backend models: admins only)."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    model = service.create(session, ctx=ctx, tenant=owner, body=body, settings=state.settings)
    return service.describe(session, model=model)


@router.get("", response_model=list[ModelOut])
def list_models(
    tenant: str,
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> list[ModelOut]:
    """The tenant's models."""
    return service.list_for(session, tenant=tenants.visible(session, ctx=ctx, name=tenant))


@router.get("/{model}", response_model=ModelOut)
def get_model(
    tenant: str,
    model: str,
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> ModelOut:
    """One model with its versions and aliases."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    return service.describe(session, model=service.get_model(session, tenant=owner, name=model))


@router.delete("/{model}", status_code=204)
def delete_model(
    tenant: str,
    model: str,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> None:
    """Delete a model: its versions are unloaded and retired; the audit trail stays."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model)
    service.mark_deleted(session, ctx=ctx, state=state, tenant=owner, model=found)


@router.post("/{model}/versions", status_code=201, response_model=VersionOut, openapi_extra=UPLOAD_BODY)
async def upload_version(
    tenant: str,
    model: str,
    request: Request,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> VersionOut:
    """Upload an artifact as the model's next version (multipart field `file`); it loads in the background."""
    owner = await run_in_threadpool(tenants.visible, session, ctx=ctx, name=tenant)
    found = await run_in_threadpool(service.get_model, session, tenant=owner, name=model)
    async with request.form(max_files=1, max_fields=8) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("multipart field 'file' with the artifact is required")
        version = await run_in_threadpool(
            versions.upload, session, ctx=ctx, state=state, tenant=owner, model=found, stream=upload.file
        )
    return versions.describe(version)


@router.get("/{model}/versions", response_model=list[VersionOut])
def list_versions(
    tenant: str,
    model: str,
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> list[VersionOut]:
    """The model's versions, oldest first."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    return versions.list_for(session, model=service.get_model(session, tenant=owner, name=model))


@router.get("/{model}/versions/{number}", response_model=VersionOut)
def get_version(
    tenant: str,
    model: str,
    number: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> VersionOut:
    """One version: state (with Triton's message), sha256, size, signature, generated config, Triton name."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model)
    return versions.describe(versions.get_version(session, model=found, number=number))


@router.delete("/{model}/versions/{number}", response_model=VersionOut)
def delete_version(
    tenant: str,
    model: str,
    number: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> VersionOut:
    """Retire a version that no alias uses; it is unloaded and removed from the repository."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model)
    return versions.describe(
        versions.retire(session, ctx=ctx, state=state, tenant=owner, model=found, number=number)
    )
