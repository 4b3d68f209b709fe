"""Models: create, list, detail, delete."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db import hooks
from control_plane.db.models import Model, ModelVersion, Tenant
from control_plane.errors import Forbidden
from control_plane.modelconfig.exceptions import InvalidModelSpec
from control_plane.modelconfig.specs import Signature
from control_plane.names import is_valid_name
from control_plane.paging import Listing, Page, cut
from control_plane.registry import artifact_guard, repository
from control_plane.registry.configgen import declared_signature
from control_plane.registry.exceptions import ModelExists, ModelNotFound
from control_plane.registry.schemas import (
    ModelCreate,
    ModelOut,
    ModelPatch,
    ModelSpec,
    Serving,
    VersionSummary,
)
from control_plane.registry.serving import check_spec, model_serving
from control_plane.settings import Settings
from control_plane.state import AppState
from control_plane.tenants import quota
from control_plane.tenants import repository as tenant_repository
from control_plane.tenants.exceptions import TenantNotFound


def get_model(session: Session, *, tenant: Tenant, name: str, lock: bool = False) -> Model:
    """A live model of the tenant, or 404. With `lock`, for a change of the model: locked (on SQLite, the
    database's write lock, `repository.hold_model`: the callers load nothing before they commit) and read
    afresh, and 404 if it was deleted meanwhile."""
    model = (
        repository.get_model(session, tenant_id=tenant.id, name=name, lock=lock)
        if is_valid_name(name)
        else None
    )
    if model is None or (lock and not repository.hold_model(session, model)):
        raise ModelNotFound(tenant.name, name)
    return model


def spec_of(model: Model) -> ModelSpec:
    """The stored serving spec of a model."""
    return ModelSpec.model_validate(model.spec)


def create(
    session: Session, *, ctx: RequestContext, tenant: Tenant, body: ModelCreate, settings: Settings
) -> Model:
    """Register a model; its spec is checked by generating a config from the declared signature."""
    if body.format == "python" and not ctx.principal.is_admin:
        raise Forbidden("Python-backend models run arbitrary code: only admins may register them")
    if repository.get_model(session, tenant_id=tenant.id, name=body.name) is not None:
        raise ModelExists(tenant.name, body.name)
    quota.check_model(session, tenant=tenant, settings=settings)
    spec = ModelSpec.model_validate(body.model_dump(exclude={"name", "format"}))
    declared = declared_signature(spec)
    if body.format == "python" and declared is None:
        raise InvalidModelSpec(
            "python models need declared 'inputs' and 'outputs' (name, datatype, shape of each tensor)"
        )
    if (spec.inputs is None) != (spec.outputs is None):
        raise InvalidModelSpec("declare both 'inputs' and 'outputs', or neither")
    check_spec(model_format=body.format, spec=spec, signature=declared, settings=settings)
    model = Model(
        tenant_id=tenant.id,
        name=body.name,
        format=body.format,
        max_batch_size=spec.max_batch_size,
        spec=spec.model_dump(mode="json", exclude_none=True),
    )
    session.add(model)
    session.flush()
    if not tenant_repository.is_live(session, tenant):  # deleted while this request ran
        raise TenantNotFound(tenant.name)
    audit.record(
        session,
        actor=ctx.principal,
        action="model.create",
        target=f"{tenant.name}/{model.name}",
        tenant=tenant.name,
        model=model.name,
        after={"format": model.format, **model.spec},
        request_id=ctx.request_id,
    )
    return model


def describe(session: Session, *, model: Model, settings: Settings) -> ModelOut:
    """A model with its effective settings, versions and aliases."""
    return describe_many(session, models=[model], settings=settings)[0]


def describe_many(session: Session, *, models: list[Model], settings: Settings) -> list[ModelOut]:
    """`describe` of each model: two queries in all, and each distinct serving spec worked out once
    (it builds and parses a config.pbtxt, ~2 ms)."""
    ids = [m.id for m in models]
    versions, aliases = (
        repository.versions_of_models(session, model_ids=ids),
        repository.aliases_of_models(session, model_ids=ids),
    )
    serving: dict[tuple[str, str, str | None], Serving] = {}
    described = []
    for model in models:
        spec, listed = spec_of(model), versions[model.id]
        signature = _latest_signature(spec, listed)
        key = (model.format, spec.model_dump_json(), signature.model_dump_json() if signature else None)
        if key not in serving:
            serving[key] = model_serving(
                model_format=model.format, spec=spec, signature=signature, settings=settings
            )
        described.append(
            ModelOut(
                name=model.name,
                format=model.format,  # type: ignore[arg-type]
                serving=serving[key],
                max_batch_size_auto=spec.max_batch_size is None,
                inputs=spec.inputs,
                outputs=spec.outputs,
                warmup=spec.warmup,
                created_at=model.created_at,
                versions=[
                    VersionSummary(version=v.version, state=v.state, created_at=v.created_at) for v in listed
                ],
                aliases=aliases[model.id],
            )
        )
    return described


def _latest_signature(spec: ModelSpec, versions: list[ModelVersion]) -> Signature | None:
    if versions:
        return Signature.model_validate(versions[-1].signature)
    return declared_signature(spec)


def update(
    session: Session,
    *,
    ctx: RequestContext,
    tenant: Tenant,
    model: Model,
    patch: ModelPatch,
    settings: Settings,
) -> Model:
    """Change batching/instances for new versions; checked against the latest signature first (else 422)."""
    get_model(session, tenant=tenant, name=model.name, lock=True)
    before = spec_of(model)
    changes = patch.model_dump(include=patch.model_fields_set)
    if "warmup" in changes and changes["warmup"] is None:
        changes["warmup"] = False
    after = ModelSpec.model_validate({**before.model_dump(), **changes})
    versions = repository.list_versions(session, model_id=model.id)
    check_spec(
        model_format=model.format, spec=after, signature=_latest_signature(after, versions), settings=settings
    )
    model.spec = after.model_dump(mode="json", exclude_none=True)
    model.max_batch_size = after.max_batch_size
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="model.update",
        target=f"{tenant.name}/{model.name}",
        tenant=tenant.name,
        model=model.name,
        before={key: before.model_dump(mode="json").get(key) for key in changes},
        after={key: after.model_dump(mode="json").get(key) for key in changes},
        request_id=ctx.request_id,
    )
    return model


def names_by_tenant(session: Session, *, tenants: list[Tenant]) -> dict[int, list[str]]:
    """Tenant id -> the names of its live models (a listing of many tenants needs no more)."""
    return repository.model_names(session, tenant_ids=[t.id for t in tenants])


def page_for(session: Session, *, tenant: Tenant, settings: Settings, page: Page[str]) -> Listing[ModelOut]:
    """One page of a tenant's live models, by name."""
    rows = cut(repository.list_models(session, tenant_id=tenant.id, page=page), page, key=lambda m: m.name)
    return Listing(describe_many(session, models=rows.items, settings=settings), rows.after)


def mark_deleted(
    session: Session, *, ctx: RequestContext, state: AppState, tenant: Tenant, model: Model
) -> None:
    """Soft-delete a model and retire its versions; they are unloaded after commit."""
    versions = repository.list_versions(session, model_id=model.id)
    before = {
        "versions": [v.version for v in versions],
        "aliases": repository.aliases_of_models(session, model_ids=[model.id])[model.id],
    }
    for version in versions:
        version.state = "retired"
        version.updated_at = datetime.now(UTC)
    model.deleted_at = datetime.now(UTC)
    session.flush()
    audit.record(
        session,
        actor=ctx.principal,
        action="model.delete",
        target=f"{tenant.name}/{model.name}",
        tenant=tenant.name,
        model=model.name,
        before=before,
        after={"deleted": True},
        request_id=ctx.request_id,
    )
    for version in versions:
        hooks.after_commit(session, functools.partial(state.loader.submit_retire, version.id))
    for sha256 in sorted({v.sha256 for v in versions}):  # what no live version uses any more
        hooks.after_commit(session, functools.partial(artifact_guard.drop_if_unused, state, sha256))
