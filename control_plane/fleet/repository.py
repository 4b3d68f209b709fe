"""All SQL of the fleet: instance rows by stable name, placements, the versions a loop acts on."""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import ScalarSelect

from control_plane.db.models import Model, ModelReplicas, ModelVersion, Placement, Tenant, TritonInstance

log = logging.getLogger(__name__)


def upsert_instance(
    session: Session, *, name: str, http_url: str, grpc_url: str, origin: str = "settings"
) -> TritonInstance:
    """The instance row with this stable name, created or given the current URLs.

    A row of another name that still claims `http_url` is stale (its server is gone and the address
    was reused, e.g. by an embedded Triton's new port): it is removed with its placements.
    """
    stale = session.scalar(
        select(TritonInstance).where(TritonInstance.http_url == http_url, TritonInstance.name != name)
    )
    if stale is not None:
        log.warning("instance %r had the address %s now used by %r; removing it", stale.name, http_url, name)
        session.delete(stale)
        session.flush()
    row = session.scalar(select(TritonInstance).where(TritonInstance.name == name))
    if row is None:
        row = TritonInstance(name=name, http_url=http_url, grpc_url=grpc_url, origin=origin)
        session.add(row)
    elif (row.http_url, row.grpc_url, row.origin) != (http_url, grpc_url, origin):
        row.http_url, row.grpc_url, row.origin = http_url, grpc_url, origin
    session.flush()
    return row


def instance_rows(session: Session) -> list[TritonInstance]:
    """Every instance row, by name."""
    return list(session.scalars(select(TritonInstance).order_by(TritonInstance.name)))


def get_instance(session: Session, name: str, *, lock: bool = False) -> TritonInstance | None:
    """The instance row named `name`."""
    query = select(TritonInstance).where(TritonInstance.name == name)
    return session.scalar(query.with_for_update() if lock else query)


def another_live_instance(session: Session, name: str) -> bool:
    """Whether an instance other than `name` is in the fleet and not draining."""
    found = session.scalar(
        select(TritonInstance.id)
        .where(TritonInstance.name != name, TritonInstance.draining_since.is_(None))
        .limit(1)
    )
    return found is not None


def instance_at(session: Session, http_url: str, *, other_than: str) -> str | None:
    """The name of another instance with this address, if any."""
    return session.scalar(
        select(TritonInstance.name).where(
            TritonInstance.http_url == http_url, TritonInstance.name != other_than
        )
    )


def instance_ids(session: Session, names: Collection[str]) -> dict[str, int]:
    """Ids of the instance rows with these names."""
    rows = session.execute(
        select(TritonInstance.name, TritonInstance.id).where(TritonInstance.name.in_(list(names)))
    )
    return dict(rows.tuples().all())


def delete_instance(session: Session, name: str) -> None:
    """Remove an instance row and its placements."""
    session.execute(delete(TritonInstance).where(TritonInstance.name == name))


@dataclass(frozen=True, slots=True)
class Health:
    """What one pass found about one instance."""

    name: str
    ready: bool
    error: str | None


def mark_instances(session: Session, seen: Sequence[Health], *, now: datetime) -> bool:
    """Record observed health, last pass and last error; whether any instance's state changed."""
    states = dict(
        session.execute(
            select(TritonInstance.name, TritonInstance.state).where(
                TritonInstance.name.in_([h.name for h in seen])
            )
        )
        .tuples()
        .all()
    )
    changed = False
    for health in seen:
        state = "ready" if health.ready else "unavailable"
        changed |= health.name in states and states[health.name] != state
        values: dict[str, object] = {"state": state, "last_reconciled_at": now, "last_error": health.error}
        if health.ready:
            values["last_seen_at"] = now
        session.execute(update(TritonInstance).where(TritonInstance.name == health.name).values(**values))
    return changed


def upsert_placement(
    session: Session,
    *,
    instance_id: int,
    version_id: int,
    state: str,
    message: str | None = None,
    now: datetime,
    desired: str | None = None,
) -> None:
    """Record the observed state of one version on one instance (and its desired state, if given)."""
    placement = session.scalar(
        select(Placement).where(Placement.instance_id == instance_id, Placement.version_id == version_id)
    )
    if placement is None:
        placement = Placement(
            instance_id=instance_id, version_id=version_id, state=state, desired=desired or "ready"
        )
        session.add(placement)
    placement.state, placement.message, placement.updated_at = state, message, now
    if desired is not None:
        placement.desired = desired
    if state == "ready":
        placement.loaded_at = now


def placements_on(session: Session, instance_ids: Collection[int]) -> list[Placement]:
    """Every placement row on these instances."""
    return list(session.scalars(select(Placement).where(Placement.instance_id.in_(list(instance_ids)))))


@dataclass(frozen=True, slots=True)
class PlacementFacts:
    """A placement row with what the policy needs of its version."""

    row: Placement
    triton_name: str
    size_bytes: int
    version_state: str


def placement_facts(
    session: Session, instance_ids: Collection[int], *, version_id: int | None = None
) -> list[PlacementFacts]:
    """The placement rows on these instances that the placement policy looks at (desired `ready`, or
    observed `ready`), and every row of `version_id` if given, each with its version's name, size and
    state. Rows of versions evicted or unloaded long ago (most rows, with many models) are left out."""
    relevant = or_(Placement.desired == "ready", Placement.state == "ready")
    if version_id is not None:
        relevant = or_(relevant, Placement.version_id == version_id)
    query = (
        select(Placement, ModelVersion.triton_name, ModelVersion.size_bytes, ModelVersion.state)
        .join(ModelVersion, ModelVersion.id == Placement.version_id)
        .where(Placement.instance_id.in_(list(instance_ids)), relevant)
    )
    return [PlacementFacts(*row) for row in session.execute(query).tuples()]


def want_placement(session: Session, *, instance_id: int, version_id: int, now: datetime) -> None:
    """Desire a version on an instance: a new placement row (observed `unloaded`), or the existing one
    desired `ready` again; one statement, so concurrent placements of the version (another replica, a
    request asking for a load) neither fail nor need a savepoint."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(Placement).values(
        instance_id=instance_id, version_id=version_id, desired="ready", state="unloaded", updated_at=now
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Placement.instance_id, Placement.version_id],
            set_={"desired": "ready", "updated_at": now},
        )
    )


def _instance_id(name: str) -> ScalarSelect[int]:
    """The id of the instance named `name`, inside another statement."""
    return select(TritonInstance.id).where(TritonInstance.name == name).scalar_subquery()


def keep_placement(session: Session, *, instance: str, version_id: int) -> None:
    """An eviction that did not happen: the version's placement on `instance` is desired `ready` again."""
    session.execute(
        update(Placement)
        .where(Placement.version_id == version_id, Placement.instance_id == _instance_id(instance))
        .values(desired="ready")
    )


def wanted_on(session: Session, *, instance: str, version_id: int) -> bool:
    """Whether a version should stay on `instance`: desired there, or no longer `ready` in the registry
    (deleted, retired, failed: not the loop's to move). One statement: the version's state and its
    placement there."""
    here = _instance_id(instance)
    row = session.execute(
        select(ModelVersion.state, Placement.desired)
        .select_from(ModelVersion)
        .outerjoin(Placement, (Placement.version_id == ModelVersion.id) & (Placement.instance_id == here))
        .where(ModelVersion.id == version_id)
    ).first()
    return row is None or row[0] != "ready" or row[1] == "ready"


@dataclass(frozen=True, slots=True)
class NamedPlacement:
    """A placement with the names the API shows it by."""

    placement: Placement
    tenant: str
    model: str
    version: int
    triton_name: str


def named_placements(session: Session, instance_ids: Collection[int]) -> list[NamedPlacement]:
    """The placements on these instances, by tenant, model and version."""
    query = (
        select(Placement, Tenant.name, Model.name, ModelVersion.version, ModelVersion.triton_name)
        .join(ModelVersion, ModelVersion.id == Placement.version_id)
        .join(Model, Model.id == ModelVersion.model_id)
        .join(Tenant, Tenant.id == Model.tenant_id)
        .where(Placement.instance_id.in_(list(instance_ids)))
        .order_by(Tenant.name, Model.name, ModelVersion.version)
    )
    return [NamedPlacement(*row) for row in session.execute(query).tuples()]


@dataclass(frozen=True, slots=True)
class VersionPlaced:
    """A live version of a model and its placements: (instance, desired, observed, message) each."""

    version: int
    state: str
    placements: list[tuple[str, str, str, str | None]]


def model_versions_placed(session: Session, model_id: int) -> list[VersionPlaced]:
    """The model's versions that are not retired, by number, each with its placements by instance name
    (one statement)."""
    query = (
        select(
            ModelVersion.id,
            ModelVersion.version,
            ModelVersion.state,
            TritonInstance.name,
            Placement.desired,
            Placement.state,
            Placement.message,
        )
        .outerjoin(Placement, Placement.version_id == ModelVersion.id)
        .outerjoin(TritonInstance, TritonInstance.id == Placement.instance_id)
        .where(ModelVersion.model_id == model_id, ModelVersion.state != "retired")
        .order_by(ModelVersion.version, TritonInstance.name)
    )
    found: dict[int, VersionPlaced] = {}
    for version_id, number, state, instance, desired, observed, message in session.execute(query).tuples():
        placed = found.setdefault(version_id, VersionPlaced(version=number, state=state, placements=[]))
        if instance is not None:
            placed.placements.append((instance, desired, observed, message))
    return list(found.values())


def replicas_setting(session: Session, model_id: int, *, lock: bool = False) -> ModelReplicas | None:
    """A model's replicas setting row (None: the default)."""
    return session.get(ModelReplicas, model_id, with_for_update=lock or None)


def placements_of(session: Session, version_id: int) -> list[Placement]:
    """Every placement row of one version."""
    return list(session.scalars(select(Placement).where(Placement.version_id == version_id)))


@dataclass(frozen=True, slots=True)
class ServableRow:
    """A version in state `ready` with its model's replicas (None: the default)."""

    version_id: int
    triton_name: str
    size_bytes: int
    replicas: int | None


def servable(session: Session, *, wanted: Collection[int]) -> list[ServableRow]:
    """Versions that should be served (state `ready` in a live model) and are `wanted` or were never
    placed anywhere, with their replicas (most versions of a large registry are neither: not read)."""
    unplaced = ~select(Placement.id).where(Placement.version_id == ModelVersion.id).exists()
    query = (
        select(ModelVersion.id, ModelVersion.triton_name, ModelVersion.size_bytes, ModelReplicas.replicas)
        .join(Model, Model.id == ModelVersion.model_id)
        .outerjoin(ModelReplicas, ModelReplicas.model_id == Model.id)
        .where(ModelVersion.state == "ready", Model.deleted_at.is_(None))
        .where(or_(ModelVersion.id.in_(list(wanted)), unplaced))
    )
    return [ServableRow(*row) for row in session.execute(query).tuples()]


def replicas_of(session: Session, version_id: int) -> tuple[int | None, int]:
    """The replicas setting of a version's model (None: the default) and the version's size."""
    row = session.execute(
        select(ModelReplicas.replicas, ModelVersion.size_bytes)
        .select_from(ModelVersion)
        .outerjoin(ModelReplicas, ModelReplicas.model_id == ModelVersion.model_id)
        .where(ModelVersion.id == version_id)
    ).one_or_none()
    return (None, 0) if row is None else (row[0], row[1])


def versions_named(session: Session, names: Collection[str]) -> dict[str, tuple[int, str]]:
    """Triton model name -> (version id, registry state), for the names that are versions of ours."""
    if not names:
        return {}
    query = select(ModelVersion.triton_name, ModelVersion.id, ModelVersion.state).where(
        ModelVersion.triton_name.in_(list(names))
    )
    return {name: (version_id, state) for name, version_id, state in session.execute(query).tuples()}


def versions_in_states(
    session: Session, states: Collection[str], *, names: Collection[str] | None = None
) -> dict[str, int]:
    """Triton model name -> version id of the versions in `states` (only those `names`, if given)."""
    query = select(ModelVersion.triton_name, ModelVersion.id).where(ModelVersion.state.in_(list(states)))
    if names is not None:
        query = query.where(ModelVersion.triton_name.in_(list(names)))
    return dict(session.execute(query).tuples().all())


def version_state(session: Session, version_id: int) -> str | None:
    """A version's registry state (None once deleted)."""
    return session.scalar(select(ModelVersion.state).where(ModelVersion.id == version_id))
