"""All SQL of the fleet: instance rows by stable name, placements, the versions a loop acts on."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from control_plane.db.models import ModelVersion, Placement, TritonInstance

log = logging.getLogger(__name__)


def upsert_instance(session: Session, *, name: str, http_url: str, grpc_url: str) -> TritonInstance:
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
        row = TritonInstance(name=name, http_url=http_url, grpc_url=grpc_url)
        session.add(row)
    else:
        row.http_url, row.grpc_url = http_url, grpc_url
    session.flush()
    return row


def instance_ids(session: Session, names: Collection[str]) -> dict[str, int]:
    """Ids of the instance rows with these names."""
    rows = session.execute(
        select(TritonInstance.name, TritonInstance.id).where(TritonInstance.name.in_(list(names)))
    )
    return dict(rows.tuples().all())


def mark_instance(session: Session, *, name: str, ready: bool, now: datetime) -> None:
    """Record an instance's observed health (and when it was last seen answering)."""
    values: dict[str, object] = {"state": "ready" if ready else "unavailable"}
    if ready:
        values["last_seen_at"] = now
    session.execute(update(TritonInstance).where(TritonInstance.name == name).values(**values))


def upsert_placement(
    session: Session,
    *,
    instance_id: int,
    version_id: int,
    state: str,
    message: str | None = None,
    now: datetime,
) -> None:
    """Record the observed state of one version on one instance."""
    placement = session.scalar(
        select(Placement).where(Placement.instance_id == instance_id, Placement.version_id == version_id)
    )
    if placement is None:
        placement = Placement(instance_id=instance_id, version_id=version_id, state=state)
        session.add(placement)
    placement.state, placement.message, placement.updated_at = state, message, now
    if state == "ready":
        placement.loaded_at = now


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
