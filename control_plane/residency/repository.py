"""All SQL of residency: pinned versions, what the budget policy needs of versions, measurements."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from control_plane.db.models import Alias, Model, ModelVersion, Placement, Tenant
from control_plane.routing.changes import mark_placements_changed


def pinned_versions(session: Session) -> set[int]:
    """Ids of the versions an alias named in their model's `pinned_aliases` points to."""
    pins = {
        model_id: set(aliases or ())
        for model_id, aliases in session.execute(
            select(Model.id, Model.pinned_aliases).where(
                Model.deleted_at.is_(None),
                Model.pinned_aliases.is_not(None),  # never pinned: NULL
            )
        ).tuples()
        if aliases
    }
    if not pins:
        return set()
    rows = session.execute(
        select(Alias.model_id, Alias.name, Alias.version_id).where(Alias.model_id.in_(list(pins)))
    ).tuples()
    return {version_id for model_id, name, version_id in rows if name in pins[model_id]}


def is_pinned(session: Session, version_id: int) -> bool:
    """Whether an alias its model pins points to the version now (what `pinned_versions` says of one)."""
    rows = session.execute(
        select(Alias.name, Model.pinned_aliases)
        .join(Model, Model.id == Alias.model_id)
        .where(Alias.version_id == version_id, Model.deleted_at.is_(None))
    ).tuples()
    return any(name in (aliases or ()) for name, aliases in rows)


def several_tenants(session: Session) -> bool:
    """Whether more than one tenant has live models (instances are shared between tenants)."""
    query = select(Model.tenant_id).where(Model.deleted_at.is_(None)).distinct().limit(2)
    return len(session.scalars(query).all()) > 1


def asked_for(session: Session) -> set[int]:
    """Versions with a placement desired `ready` somewhere."""
    query = select(Placement.version_id).where(Placement.desired == "ready").distinct()
    return set(session.scalars(query))


@dataclass(frozen=True, slots=True)
class VersionFacts:
    """What the budget policy needs of a version."""

    version_id: int
    triton_name: str
    tenant: str
    size_bytes: int
    memory_bytes: int | None
    last_used: datetime | None  # latest data-plane use any replica recorded
    loaded_at: datetime | None
    updated_at: datetime | None  # of its desired placement: when it was asked for
    memory_source: str | None = None  # GROWN: `memory_bytes` is what it came to hold after a load


def version_facts(
    session: Session, version_ids: Collection[int], *, instance_id: int
) -> dict[int, VersionFacts]:
    """Facts of these versions, with their placement on one instance (if any)."""
    if not version_ids:
        return {}
    used = (
        select(Placement.version_id, func.max(Placement.last_used_at).label("used"))
        .where(Placement.version_id.in_(list(version_ids)))
        .group_by(Placement.version_id)
        .subquery()
    )
    query = (
        select(
            ModelVersion.id,
            ModelVersion.triton_name,
            Tenant.name,
            ModelVersion.size_bytes,
            ModelVersion.memory_bytes,
            used.c.used,
            Placement.loaded_at,
            Placement.updated_at,
            ModelVersion.memory_source,
        )
        .join(Model, Model.id == ModelVersion.model_id)
        .join(Tenant, Tenant.id == Model.tenant_id)
        .outerjoin(used, used.c.version_id == ModelVersion.id)
        .outerjoin(
            Placement, (Placement.version_id == ModelVersion.id) & (Placement.instance_id == instance_id)
        )
        .where(ModelVersion.id.in_(list(version_ids)))
    )
    return {row[0]: VersionFacts(*row) for row in session.execute(query).tuples()}


def measured(session: Session) -> list[tuple[int, int]]:
    """(memory bytes, artifact bytes) of measured versions, for estimates of the others."""
    query = select(ModelVersion.memory_bytes, ModelVersion.size_bytes).where(
        ModelVersion.memory_bytes.is_not(None), ModelVersion.memory_source != "estimate"
    )
    return [(int(m), int(s)) for m, s in session.execute(query.limit(1000)).tuples() if m is not None]


def record_measurement(
    session: Session, *, version_id: int, memory_bytes: int, source: str, load_seconds: float | None
) -> None:
    """A version's measured memory (and load time). Measured at a load, a version may hold less than it came
    to hold after an earlier one (`record_growth`: it allocates at its first inference): the larger stays,
    so its next load is counted at that size."""
    kept = ModelVersion.memory_bytes > memory_bytes
    values: dict[str, object] = {
        "memory_bytes": case((kept, ModelVersion.memory_bytes), else_=memory_bytes),
        "memory_source": case((kept, ModelVersion.memory_source), else_=source),
    }
    if load_seconds is not None:
        values["load_seconds"] = load_seconds
    session.execute(update(ModelVersion).where(ModelVersion.id == version_id).values(**values))


GROWN = "grown"  # memory_source of a figure `record_growth` wrote


def record_growth(session: Session, grown: Mapping[int, int]) -> None:
    """Versions whose processes came to hold well more than their recorded memory since their load (a
    model that allocates on its first inference), or well less than a figure recorded so (a spike it
    freed): what they hold, for the loads after their next eviction."""
    for version_id, memory_bytes in grown.items():
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.id == version_id)
            .values(memory_bytes=memory_bytes, memory_source=GROWN)
        )


def record_load_time(session: Session, *, version_id: int, seconds: float) -> None:
    """A version's load time (its memory could not be measured)."""
    session.execute(update(ModelVersion).where(ModelVersion.id == version_id).values(load_seconds=seconds))


def record_unreturned(session: Session, *, version_id: int, unreturned: int | None) -> None:
    """Memory an unload of the version did not give back (None: it did)."""
    session.execute(
        update(ModelVersion).where(ModelVersion.id == version_id).values(memory_unreturned_bytes=unreturned)
    )


def unreturned_record(session: Session, version_id: int) -> tuple[int | None, int | None]:
    """A version's recorded memory and what its last unload did not give back (None, None: no version)."""
    row = session.execute(
        select(ModelVersion.memory_bytes, ModelVersion.memory_unreturned_bytes).where(
            ModelVersion.id == version_id
        )
    ).one_or_none()
    return (None, None) if row is None else (row[0], row[1])


def triton_name(session: Session, version_id: int) -> str | None:
    """A version's Triton model name (None: no such version)."""
    return session.scalar(select(ModelVersion.triton_name).where(ModelVersion.id == version_id))


def lock_version_named(session: Session, name: str) -> ModelVersion | None:
    """The version of a Triton model name, its row locked against concurrent state changes (as every
    writer of a version's state locks it: `FOR NO KEY UPDATE` on Postgres)."""
    return session.scalar(
        select(ModelVersion).where(ModelVersion.triton_name == name).with_for_update(key_share=True)
    )


def model_name(session: Session, model_id: int) -> str | None:
    """A model's name, as its tenant calls it."""
    return session.scalar(select(Model.name).where(Model.id == model_id))


def fail_first_load(session: Session, version_id: int, message: str) -> None:
    """A `ready` version that was never loaded anywhere becomes `failed` with the load's reason (one
    that loaded before stays `ready`: the loop retries it)."""
    if ever_loaded(session, version_id):
        return
    version = session.get(ModelVersion, version_id, with_for_update={"key_share": True})
    if version is not None and version.state == "ready":
        version.state, version.state_message = "failed", message
        version.updated_at = datetime.now(UTC)


def show_placements(
    session: Session, instance_id: int, version_ids: list[int], *, state: str, **values: str
) -> None:
    """Write placements' observed state (and `values`) on one instance in the caller's transaction; the
    routing table's placements are read again when it commits."""
    session.execute(
        update(Placement)
        .where(Placement.instance_id == instance_id, Placement.version_id.in_(version_ids))
        .values(state=state, message=None, updated_at=datetime.now(UTC), **values)
    )
    mark_placements_changed(session)


def ever_loaded(session: Session, version_id: int) -> bool:
    """Whether the version was ever loaded somewhere (a placement with a load time)."""
    found = session.scalar(
        select(Placement.id)
        .where(Placement.version_id == version_id, Placement.loaded_at.is_not(None))
        .limit(1)
    )
    return found is not None


def touch(session: Session, used: Mapping[str, datetime]) -> None:
    """Record data-plane last uses (Triton model name -> when) on the versions' placements."""
    query = select(ModelVersion.triton_name, ModelVersion.id).where(ModelVersion.triton_name.in_(list(used)))
    ids = dict(session.execute(query).tuples().all())
    for name, when in used.items():
        if name in ids:
            session.execute(
                update(Placement)
                .where(Placement.version_id == ids[name])
                .where((Placement.last_used_at.is_(None)) | (Placement.last_used_at < when))
                .values(last_used_at=when)
            )


def load_seconds(session: Session, version_id: int) -> float | None:
    """A version's last measured load time."""
    return session.scalar(select(ModelVersion.load_seconds).where(ModelVersion.id == version_id))
