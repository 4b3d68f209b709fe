"""The database itself enforces the registry's invariants: each test tries to break one."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from control_plane.db.models import (
    Alias,
    AliasRoute,
    AuditEvent,
    Model,
    ModelVersion,
    Placement,
    Tenant,
    TritonInstance,
)
from tests.support import builders


def _violates(session: Session, action: Callable[[], object], constraint: str) -> None:
    """Run `action` in a savepoint and assert the database rejects it naming `constraint`."""
    with pytest.raises(IntegrityError) as info, session.begin_nested():
        action()
        session.flush()
    assert constraint in str(info.value)


def test_tenant_name_unique_and_nonempty(db_session: Session) -> None:
    t = builders.tenant(db_session)
    _violates(db_session, lambda: db_session.add(Tenant(name=t.name)), "uq_tenants_name")
    _violates(db_session, lambda: db_session.add(Tenant(name="")), "ck_tenants_name_length")


def test_model_name_unique_per_tenant_only(db_session: Session) -> None:
    a, b = builders.tenant(db_session), builders.tenant(db_session)
    m = builders.model(db_session, tenant_row=a)
    builders.model(db_session, tenant_row=b, name=m.name)  # same name, other tenant: fine
    _violates(
        db_session,
        lambda: db_session.add(Model(tenant_id=a.id, name=m.name, format="onnx")),
        "uq_models_tenant_id_name",
    )


def test_deleted_model_frees_its_name(db_session: Session) -> None:
    t = builders.tenant(db_session)
    m = builders.model(db_session, tenant_row=t)
    m.deleted_at = func.now()
    db_session.flush()
    again = builders.model(db_session, tenant_row=t, name=m.name)
    assert again.id != m.id


def test_model_format_and_batch_checked(db_session: Session) -> None:
    t = builders.tenant(db_session)
    _violates(
        db_session,
        lambda: db_session.add(Model(tenant_id=t.id, name="x", format="pickle")),
        "ck_models_format",
    )
    _violates(
        db_session,
        lambda: db_session.add(Model(tenant_id=t.id, name="y", format="onnx", max_batch_size=-1)),
        "ck_models_max_batch_size",
    )


def test_model_needs_existing_tenant(db_session: Session) -> None:
    _violates(
        db_session,
        lambda: db_session.add(Model(tenant_id=987654321, name="x", format="onnx")),
        "fk_models_tenant_id_tenants",
    )


def test_version_number_unique_positive_and_state_checked(db_session: Session) -> None:
    m = builders.model(db_session, tenant_row=builders.tenant(db_session))
    builders.version(db_session, model_row=m, number=1)
    _violates(db_session, lambda: builders.version(db_session, model_row=m, number=1), "uq_model_versions")
    _violates(db_session, lambda: builders.version(db_session, model_row=m, number=0), "version_positive")
    _violates(
        db_session,
        lambda: builders.version(db_session, model_row=m, number=2, state="exploded"),
        "ck_model_versions_state",
    )
    _violates(
        db_session,
        lambda: builders.version(db_session, model_row=m, number=3, sha256="abc"),
        "ck_model_versions_sha256_length",
    )
    _violates(
        db_session,
        lambda: builders.version(db_session, model_row=m, number=4, size_bytes=-5),
        "ck_model_versions_size_nonnegative",
    )


def test_triton_name_unique_across_models(db_session: Session) -> None:
    t = builders.tenant(db_session)
    v = builders.version(db_session, model_row=builders.model(db_session, tenant_row=t))
    other = builders.model(db_session, tenant_row=t)
    _violates(
        db_session,
        lambda: builders.version(db_session, model_row=other, triton_name=v.triton_name),
        "uq_model_versions_triton_name",
    )


def test_api_key_role_and_tenant_binding(db_session: Session) -> None:
    t = builders.tenant(db_session)
    builders.api_key(db_session, tenant_row=None, role="admin")  # admin keys may be unbound
    _violates(db_session, lambda: builders.api_key(db_session, tenant_row=t, role="root"), "ck_api_keys_role")
    _violates(
        db_session,
        lambda: builders.api_key(db_session, tenant_row=None, role="consumer"),
        "ck_api_keys_tenant_bound",
    )
    k = builders.api_key(db_session, tenant_row=t)
    _violates(db_session, lambda: builders.api_key(db_session, tenant_row=t, prefix=k.prefix), "uq_api_keys")
    _violates(
        db_session, lambda: builders.api_key(db_session, tenant_row=t, key_hash="short"), "key_hash_length"
    )


def test_alias_unique_per_model_and_version_cannot_vanish_under_it(db_session: Session) -> None:
    m = builders.model(db_session, tenant_row=builders.tenant(db_session))
    v = builders.version(db_session, model_row=m)
    db_session.add(Alias(model_id=m.id, name="production", version_id=v.id))
    db_session.flush()
    _violates(
        db_session,
        lambda: db_session.add(Alias(model_id=m.id, name="production", version_id=v.id)),
        "uq_aliases_model_id_name",
    )
    _violates(
        db_session,
        lambda: db_session.execute(delete(ModelVersion).where(ModelVersion.id == v.id)),
        "fk_aliases_version_id_model_versions",
    )


def test_route_weight_range_and_kind(db_session: Session) -> None:
    m = builders.model(db_session, tenant_row=builders.tenant(db_session))
    v = builders.version(db_session, model_row=m)
    alias = Alias(model_id=m.id, name="production", version_id=v.id)
    db_session.add(alias)
    db_session.flush()
    _violates(
        db_session,
        lambda: db_session.add(AliasRoute(alias_id=alias.id, version_id=v.id, kind="weighted", weight=101)),
        "ck_alias_routes_weight_range",
    )
    _violates(
        db_session,
        lambda: db_session.add(AliasRoute(alias_id=alias.id, version_id=v.id, kind="mirror", weight=5)),
        "ck_alias_routes_kind",
    )


def test_audit_outcome_checked(db_session: Session) -> None:
    _violates(
        db_session,
        lambda: db_session.add(AuditEvent(actor="admin", action="x", target="y", outcome="maybe")),
        "ck_audit_events_outcome",
    )


def test_placement_unique_per_instance_and_state_checked(db_session: Session) -> None:
    m = builders.model(db_session, tenant_row=builders.tenant(db_session))
    v = builders.version(db_session, model_row=m)
    inst = TritonInstance(name=builders.unique_name("triton"), http_url="http://a:8000", grpc_url="a:8001")
    db_session.add(inst)
    db_session.flush()
    db_session.add(Placement(instance_id=inst.id, version_id=v.id, state="ready"))
    db_session.flush()
    _violates(
        db_session,
        lambda: db_session.add(Placement(instance_id=inst.id, version_id=v.id, state="ready")),
        "uq_placements_instance_id",
    )
    _violates(
        db_session,
        lambda: db_session.execute(update(Placement).values(state="gone")),
        "ck_placements_state",
    )
    _violates(
        db_session,
        lambda: db_session.add(TritonInstance(name="dup", http_url=inst.http_url, grpc_url="b:1")),
        "uq_triton_instances_http_url",
    )


def test_tenant_with_models_cannot_be_deleted(db_session: Session) -> None:
    t = builders.tenant(db_session)
    builders.model(db_session, tenant_row=t)
    _violates(
        db_session,
        lambda: db_session.execute(delete(Tenant).where(Tenant.id == t.id)),
        "fk_models_tenant_id_tenants",
    )
