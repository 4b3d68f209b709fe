"""Versions: upload (validate, store, register, then load), detail, delete."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.artifacts import StoredArtifact
from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db import hooks
from control_plane.db.models import Model, ModelVersion, Tenant
from control_plane.errors import Forbidden
from control_plane.fleet.loader import NO_ROOM, NO_ROOM_DETAIL
from control_plane.modelconfig.config import artifact_filename
from control_plane.modelconfig.specs import Signature
from control_plane.names import triton_model_name
from control_plane.paging import Listing, Page, cut
from control_plane.registry import artifact_guard, repository
from control_plane.registry.configgen import declared_signature, generate_config
from control_plane.registry.exceptions import VersionConflict, VersionNotFound
from control_plane.registry.schemas import VersionOut
from control_plane.registry.service import get_model, spec_of
from control_plane.registry.serving import serving_of_config
from control_plane.registry.staging import inspect_artifact, stage_upload
from control_plane.routing.table import public_reason
from control_plane.state import AppState
from control_plane.tenants import quota


def upload(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    tenant: Tenant,
    model: Model,
    stream: BinaryIO,
    example: BinaryIO | None = None,
) -> ModelVersion:
    """Validate and store an artifact, register it as the next version, and load it after commit."""
    if model.format == "python" and not ctx.principal.is_admin:
        raise Forbidden("Python-backend models run arbitrary code: only admins may upload versions")
    spec, settings = spec_of(model), state.settings
    with tempfile.TemporaryDirectory(prefix="cp-upload-") as tmp:
        staged = stage_upload(
            stream,
            destination=Path(tmp) / artifact_filename(model.format),
            max_bytes=settings.max_upload_bytes,
        )
        example_path = None
        if example is not None:
            example_path = Path(tmp) / "example"
            stage_upload(example, destination=example_path, max_bytes=settings.max_request_bytes)
        signature = inspect_artifact(
            staged,
            model_format=model.format,
            declared=declared_signature(spec),
            example=example_path,
            workdir=Path(tmp),
            max_bytes=settings.max_upload_bytes,
        )
        generate_config(
            name="validation", model_format=model.format, spec=spec, signature=signature, settings=settings
        )
        # The quota, before the bytes are stored (and again, locked, when they are registered).
        quota.check_version(
            session,
            tenant=tenant,
            settings=settings,
            sha256=staged.sha256,
            size_bytes=staged.size_bytes,
            lock=False,
        )
        artifact_guard.hold(session, staged.sha256)
        existed = state.artifacts.exists(staged.sha256)
        with staged.path.open("rb") as artifact:
            stored = state.artifacts.put(artifact, max_bytes=settings.max_upload_bytes)
    if not existed:
        hooks.on_rollback(session, lambda: artifact_guard.drop_if_unused(state, stored.sha256))
    return register(
        session,
        ctx=ctx,
        state=state,
        tenant=tenant,
        model=model,
        artifact=stored,
        signature=signature,
        action="version.create",
        audit_extra={},
    )


def redeploy(
    session: Session, *, ctx: RequestContext, state: AppState, tenant: Tenant, model: Model, number: int
) -> ModelVersion:
    """Admins: a new version of an existing version's artifact and signature, with today's settings."""
    if not ctx.principal.is_admin:
        raise Forbidden("only admins may re-deploy a version with new settings")
    # Locked before the source is read: a delete of it cannot commit (and drop its artifact) in between.
    repository.lock_model(session, model)
    source = get_version(session, model=model, number=number)
    return register(
        session,
        ctx=ctx,
        state=state,
        tenant=tenant,
        model=model,
        artifact=StoredArtifact(uri=source.artifact_uri, sha256=source.sha256, size_bytes=source.size_bytes),
        signature=Signature.model_validate(source.signature),
        action="version.redeploy",
        audit_extra={"redeployed_from": number},
    )


def register(
    session: Session,
    *,
    ctx: RequestContext,
    state: AppState,
    tenant: Tenant,
    model: Model,
    artifact: StoredArtifact,
    signature: Signature,
    action: str,
    audit_extra: dict[str, Any],
) -> ModelVersion:
    """The next version for a stored artifact, configured from the model's spec; it loads after commit."""
    # The lock serializes version numbering, and reads the model afresh: a PATCH that committed while this
    # upload ran configures this version too, and a model deleted meanwhile is 404.
    get_model(session, tenant=tenant, name=model.name, lock=True)
    # Then the quota, locking the tenant when it has a limit: no other upload of the tenant passes its check
    # beside this one. After the model's lock, so that waiting for a model held long (a move whose version
    # was unloaded again between its load and its lock, loading it once more) holds up no other model.
    quota.check_version(
        session,
        tenant=tenant,
        settings=state.settings,
        sha256=artifact.sha256,
        size_bytes=artifact.size_bytes,
    )
    spec, settings = spec_of(model), state.settings
    number = repository.next_version_number(session, model_id=model.id)
    name = triton_model_name(tenant=tenant.name, model=model.name, model_id=model.id, version=number)
    version = ModelVersion(
        model_id=model.id,
        version=number,
        triton_name=name,
        artifact_uri=artifact.uri,
        sha256=artifact.sha256,
        size_bytes=artifact.size_bytes,
        signature=signature.model_dump(mode="json", exclude_defaults=True),
        config_text=generate_config(
            name=name, model_format=model.format, spec=spec, signature=signature, settings=settings
        ),
        state="registered",
        created_by_key_id=ctx.principal.key_id,
    )
    session.add(version)
    try:
        session.flush()
    except IntegrityError as exc:
        raise VersionConflict(
            f"version {number} of '{model.name}' was registered concurrently; retry"
        ) from exc
    audit.record(
        session,
        actor=ctx.principal,
        action=action,
        target=f"{tenant.name}/{model.name}/v{number}",
        tenant=tenant.name,
        model=model.name,
        request_id=ctx.request_id,
        after={
            "version": number,
            "sha256": artifact.sha256,
            "size_bytes": artifact.size_bytes,
            **audit_extra,
        },
    )
    version_id = version.id
    if settings.load_on_upload:  # else it loads on its first request, promote or POST .../load
        hooks.after_commit(session, lambda: state.loader.submit_load(version_id))
    return version


def load(
    session: Session, *, state: AppState, model: Model, number: int, internal: bool = False
) -> VersionOut:
    """Load a version and wait until it is resident or failed (or the load wait is over)."""
    version = get_version(session, model=model, number=number)
    version_id = version.id
    session.rollback()  # hold no snapshot or lock while the loop loads it
    outcome = state.loader.load(version_id)
    if outcome == NO_ROOM:
        raise VersionConflict(f"version {number} cannot be loaded now: {NO_ROOM_DETAIL}")
    if (
        outcome == "loading"
    ):  # the wait is over, the load is not (it goes on): not a 200 with nowhere resident
        timeout = state.residency.reconciler_load_timeout()
        raise VersionConflict(
            f"version {number} is not loaded yet: its load did not finish within {timeout:g} s"
        )
    fresh = session.get_one(ModelVersion, version_id, populate_existing=True)
    if fresh.state == "retired":  # deleted while it loaded: gone, as it is for every other request
        raise VersionNotFound(model.name, number)
    return describe(fresh, model=model.name, resident_on=resident_on(session, version_id), internal=internal)


def resident_on(session: Session, version_id: int) -> list[str]:
    """The instances the version is observed ready on."""
    return repository.resident_on(session, version_id=version_id)


def get_version(session: Session, *, model: Model, number: int) -> ModelVersion:
    """A non-retired version of the model, or 404."""
    version = repository.get_version(session, model_id=model.id, number=number)
    if version is None:
        raise VersionNotFound(model.name, number)
    return version


def list_for(session: Session, *, model: Model, internal: bool = False) -> list[VersionOut]:
    """The model's non-retired versions, oldest first (`internal`: as `describe`)."""
    rows = repository.list_versions(session, model_id=model.id)
    return [describe(v, model=model.name, internal=internal) for v in rows]


def page_for(
    session: Session, *, model: Model, page: Page[int], internal: bool = False
) -> Listing[VersionOut]:
    """One page of the model's non-retired versions, oldest first (`internal`: as `describe`)."""
    rows = repository.list_versions(session, model_id=model.id, page=page)
    return cut(rows, page, key=lambda v: v.version).map(
        lambda v: describe(v, model=model.name, internal=internal)
    )


def public_state_message(version: ModelVersion, model: str) -> str | None:
    """A version's state message as the API shows it (tenants' keys too): Triton's reason without the
    traceback, server folders or internal name it came with (`routing.table.public_reason`); the full
    text stays in the log and in the admin's placements."""
    message = version.state_message
    return public_reason(message, version.triton_name, model) if message else None


def describe(
    version: ModelVersion, *, model: str, resident_on: list[str] | None = None, internal: bool = False
) -> VersionOut:
    """The API view of a version of `model`. Where its artifact is stored and its name in Triton are the
    platform's (`internal`: for admins): for tenants' keys they are null, and its config names the model
    as they do (internal names and addresses never reach tenants)."""
    config = version.config_text
    if not internal and config is not None:
        config = config.replace(f'name: "{version.triton_name}"', f'name: "{model}"', 1)
    return VersionOut(
        version=version.version,
        state=version.state,
        state_message=public_state_message(version, model),
        resident_on=resident_on,
        memory_bytes=version.memory_bytes,
        memory_source=version.memory_source,
        load_seconds=version.load_seconds,
        memory_unreturned_bytes=version.memory_unreturned_bytes,
        sha256=version.sha256,
        size_bytes=version.size_bytes,
        artifact_uri=version.artifact_uri if internal else None,
        triton_name=version.triton_name if internal else None,
        signature=version.signature,
        config=config,
        serving=serving_of_config(version.config_text),
        created_at=version.created_at,
        updated_at=version.updated_at,
    )


def retire(
    session: Session, *, ctx: RequestContext, state: AppState, tenant: Tenant, model: Model, number: int
) -> ModelVersion:
    """Retire a version no alias uses; it is unloaded and its repository entry removed after commit."""
    repository.lock_model(session, model)  # as a promote does: no alias moves onto it while we look
    version = get_version(session, model=model, number=number)
    users = repository.aliases_referencing(session, version_id=version.id)
    if users:
        raise VersionConflict(f"version {number} is used by alias(es) {', '.join(users)}; move them first")
    before = {"state": version.state}
    version.state = "retired"
    version.updated_at = datetime.now(UTC)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="version.delete",
        target=f"{tenant.name}/{model.name}/v{number}",
        tenant=tenant.name,
        model=model.name,
        before=before,
        after={"state": "retired"},
        request_id=ctx.request_id,
    )
    version_id, sha256 = version.id, version.sha256
    hooks.after_commit(session, lambda: state.loader.submit_retire(version_id))
    hooks.after_commit(session, lambda: artifact_guard.drop_if_unused(state, sha256))
    return version
