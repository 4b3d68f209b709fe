"""Aliases: point a name such as `production` at a ready version, with history and audit."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from control_plane.audit import service as audit
from control_plane.auth.context import RequestContext
from control_plane.db.models import Alias, AliasHistory, Model, ModelVersion, Tenant
from control_plane.errors import Forbidden, InvalidRequest
from control_plane.names import is_valid_name
from control_plane.registry import repository
from control_plane.registry.exceptions import VersionConflict
from control_plane.registry.schemas import AliasOut
from control_plane.registry.versions import get_version
from control_plane.settings import Settings


def check_may_move(*, ctx: RequestContext, alias_name: str, settings: Settings) -> None:
    """Validate the alias name; only admins move protected aliases."""
    if not is_valid_name(alias_name):
        raise InvalidRequest(f"invalid alias name {alias_name!r}")
    if alias_name in settings.protected_aliases and not ctx.principal.is_admin:
        raise Forbidden(f"alias '{alias_name}' is protected: only admins may move it")


def set_alias(
    session: Session,
    *,
    ctx: RequestContext,
    settings: Settings,
    tenant: Tenant,
    model: Model,
    alias_name: str,
    number: int,
    reason: str | None,
) -> AliasOut:
    """Point the alias at a ready version in this transaction, with history and audit."""
    check_may_move(ctx=ctx, alias_name=alias_name, settings=settings)
    version = get_version(session, model=model, number=number)
    if version.state != "ready":
        raise VersionConflict(f"version {number} is {version.state}, not ready; it cannot serve an alias")
    alias = repository.get_alias(session, model_id=model.id, name=alias_name, lock=True)
    previous: ModelVersion | None = None
    if alias is None:
        alias = Alias(model_id=model.id, name=alias_name, version_id=version.id)
        session.add(alias)
    else:
        previous = repository.get_version_by_id(session, alias.version_id)
        alias.version_id = version.id
        alias.updated_at = datetime.now(UTC)
    session.flush()
    session.add(
        AliasHistory(
            alias_id=alias.id,
            from_version_id=previous.id if previous else None,
            to_version_id=version.id,
            action="promote",
            actor_key_id=ctx.principal.key_id,
            reason=reason,
        )
    )
    audit.record(
        session,
        actor=ctx.principal,
        action="alias.set",
        target=f"{tenant.name}/{model.name}@{alias_name}",
        tenant=tenant.name,
        model=model.name,
        request_id=ctx.request_id,
        before={"version": previous.version if previous else None},
        after={"version": number},
    )
    return AliasOut(alias=alias_name, version=number, previous_version=previous.version if previous else None)
