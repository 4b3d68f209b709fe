"""Model, version and alias endpoints (thin: parse, call one service function, return)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from control_plane import paging
from control_plane.auth.context import RequestContext, request_context
from control_plane.dependencies import get_session, get_state, waiting_for_loads
from control_plane.errors import InvalidRequest
from control_plane.paging import Page
from control_plane.registry import service, versions
from control_plane.registry.schemas import MAX_VERSION, ModelCreate, ModelOut, ModelPatch, VersionOut
from control_plane.state import AppState
from control_plane.tenants import quota
from control_plane.tenants import service as tenants

router = APIRouter(prefix="/v1/tenants/{tenant}/models", tags=["models"])
BY_VERSION = paging.by_number(MAX_VERSION, "version")  # an INTEGER
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the model: .onnx, a zip/tar of an .onnx with its external "
                            "data files, a TorchScript file, or a Python model",
                        },
                        "example": {
                            "type": "string",
                            "format": "binary",
                            "description": "TorchScript only: example inputs (.npz or JSON) from which "
                            "the signature is derived when the model declares none",
                        },
                    },
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
    return service.describe(session, model=model, settings=state.settings)


@router.get("", response_model=list[ModelOut])
def list_models(
    tenant: str,
    request: Request,
    response: Response,
    page: Page[str] = Depends(paging.by_name),
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> list[ModelOut]:
    """The tenant's models, by name (paged: `limit`, `after`, `Link: rel="next"`)."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    return paging.answer(
        request, response, service.page_for(session, tenant=owner, settings=state.settings, page=page), page
    )


@router.get("/{model}", response_model=ModelOut)
def get_model(
    tenant: str,
    model: str,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> ModelOut:
    """One model with its effective batching and instance settings, versions and aliases."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model)
    return service.describe(session, model=found, settings=state.settings)


@router.patch("/{model}", response_model=ModelOut)
def update_model(
    tenant: str,
    model: str,
    body: ModelPatch,
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> ModelOut:
    """Change max_batch_size, dynamic_batching, instance_group or warmup for new versions.

    Checked through Triton's model config against the latest version's signature before anything
    changes (422 and nothing changed otherwise); audited as `model.update`. Existing versions keep their
    config: an admin re-deploys one with the new settings via `POST .../versions/{n}/redeploy`.
    """
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model, lock=True)
    updated = service.update(session, ctx=ctx, tenant=owner, model=found, patch=body, settings=state.settings)
    return service.describe(session, model=updated, settings=state.settings)


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
    found = service.get_model(session, tenant=owner, name=model, lock=True)  # no upload or delete beside
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
    # A tenant whose quota has no room left is refused before its body arrives.
    await run_in_threadpool(
        quota.check_version, session, tenant=owner, settings=state.settings, sha256=None, lock=False
    )
    # The body may take minutes to arrive: hold no transaction (nor its pooled connection) while it does.
    # The upload reads the model again, under its lock, when it numbers the version.
    await run_in_threadpool(session.rollback)
    async with request.form(max_files=2, max_fields=8) as form:
        upload, example = form.get("file"), form.get("example")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("multipart field 'file' with the artifact is required")
        if example is not None and not isinstance(example, UploadFile):
            raise InvalidRequest("multipart field 'example' must be a file (.npz or JSON of example inputs)")
        version = await run_in_threadpool(
            versions.upload,
            session,
            ctx=ctx,
            state=state,
            tenant=owner,
            model=found,
            stream=upload.file,
            example=example.file if example is not None else None,
        )
    return versions.describe(version, model=found.name, internal=ctx.principal.is_admin)


@router.get("/{model}/versions", response_model=list[VersionOut])
def list_versions(
    tenant: str,
    model: str,
    request: Request,
    response: Response,
    page: Page[int] = Depends(BY_VERSION),
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> list[VersionOut]:
    """The model's versions, oldest first (paged: `limit`, `after`, `Link: rel="next"`)."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model)
    listed = versions.page_for(session, model=found, page=page, internal=ctx.principal.is_admin)
    return paging.answer(request, response, listed, page)


@router.get("/{model}/versions/{number}", response_model=VersionOut)
def get_version(
    tenant: str,
    model: str,
    number: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    ctx: RequestContext = Depends(request_context),
    session: Session = Depends(get_session, scope="function"),
) -> VersionOut:
    """One version: state (with Triton's message), sha256, size, signature, generated config; where its
    artifact is stored and its name in Triton for admins."""
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model)
    version = versions.get_version(session, model=found, number=number)
    return versions.describe(
        version,
        model=found.name,
        resident_on=versions.resident_on(session, version.id),
        internal=ctx.principal.is_admin,
    )


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
        versions.retire(session, ctx=ctx, state=state, tenant=owner, model=found, number=number),
        model=found.name,
        internal=ctx.principal.is_admin,
    )


@router.post("/{model}/versions/{number}/load", response_model=VersionOut)
async def load_version(
    tenant: str,
    model: str,
    number: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> VersionOut:
    """Load a version now and wait (warm it before traffic): `ready` and resident, or `failed` with
    Triton's reason. Versions otherwise load on their first request or on promote (residency)."""

    def load() -> VersionOut:
        owner = tenants.visible(session, ctx=ctx, name=tenant)
        found = service.get_model(session, tenant=owner, name=model)
        return versions.load(
            session, state=state, model=found, number=number, internal=ctx.principal.is_admin
        )

    return await waiting_for_loads(state, load)


@router.post("/{model}/versions/{number}/redeploy", status_code=201, response_model=VersionOut)
def redeploy_version(
    tenant: str,
    model: str,
    number: Annotated[int, Path(ge=1, le=MAX_VERSION)],
    ctx: RequestContext = Depends(request_context),
    state: AppState = Depends(get_state),
    session: Session = Depends(get_session, scope="function"),
) -> VersionOut:
    """Admins: register version `number`'s artifact again as a new version with the model's current settings.

    The old version, its aliases and history stay as they are; audited as `version.redeploy`.
    """
    owner = tenants.visible(session, ctx=ctx, name=tenant)
    found = service.get_model(session, tenant=owner, name=model)
    return versions.describe(
        versions.redeploy(session, ctx=ctx, state=state, tenant=owner, model=found, number=number),
        model=found.name,
        internal=ctx.principal.is_admin,
    )
