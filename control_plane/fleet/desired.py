"""Desired placements in the registry: the placement policy applied to what is servable, as rows.

A servable version (state `ready`) is placed when something wants it resident: a placement of it is
desired `ready` somewhere (a request or a promote asked for it, and no eviction undid that), it is
pinned, or it has never been placed at all. A version evicted everywhere stays unplaced until it is
asked for again (residency, issue 12).

Placement rows carry the desired state (`ready`: the version should be loaded there, `absent`: it
should not) beside the observed one. Rows of a version whose load is under way (`registered`,
`loading`) belong to the loader and are left alone; rows of released or failed versions become
`absent`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from control_plane.fleet import repository
from control_plane.fleet.placement import Servable, Slot, plan
from control_plane.residency.repository import asked_for, pinned_versions

LEFT_ALONE = ("registered", "loading")  # a load is under way: the loader placed it


@dataclass(frozen=True)
class Desired:
    """What should be where, after the policy ran."""

    on: dict[str, dict[str, int]]  # instance -> {Triton model name: version id}, servable versions only
    holders: dict[int, frozenset[str]]  # servable version id -> the instances it should be on
    recorded: dict[str, dict[str, int]]  # instance -> {Triton model name: version id} last recorded ready
    pinned: frozenset[int] = frozenset()  # versions a pinned alias points to (read once per pass)


def apply_policy(
    session: Session,
    *,
    instances: Mapping[str, int],
    slots: Sequence[Slot],
    default_replicas: int,
    now: datetime,
) -> Desired:
    """Run the policy over these instances (name -> row id) and write what changed."""
    names = {row_id: name for name, row_id in instances.items()}
    facts = repository.placement_facts(session, instances.values())
    pinned = frozenset(pinned_versions(session))
    asked = asked_for(session) | pinned
    servable = {row.version_id: row for row in repository.servable(session, wanted=asked)}
    rows: dict[tuple[str, int], repository.PlacementFacts] = {}
    current: dict[int, set[str]] = {}
    base: list[tuple[str, int]] = []
    for fact in facts:
        instance, version_id = names[fact.row.instance_id], fact.row.version_id
        rows[(instance, version_id)] = fact
        if fact.row.desired != "ready":
            continue
        if version_id in servable:
            current.setdefault(version_id, set()).add(instance)
        elif fact.version_state in LEFT_ALONE:
            base.append((instance, fact.size_bytes))
    wanted = [Servable(v.version_id, v.replicas or default_replicas, v.size_bytes) for v in servable.values()]
    holders = plan(wanted, current, slots, base=base)
    for version_id, chosen in holders.items():
        for instance in chosen:
            _want(session, rows.get((instance, version_id)), instances[instance], version_id, now)
    for (instance, version_id), fact in rows.items():
        keep = (
            instance in holders.get(version_id, ())
            if version_id in servable
            else fact.version_state in LEFT_ALONE
        )
        if fact.row.desired == "ready" and not keep:
            fact.row.desired, fact.row.updated_at = "absent", now
    on: dict[str, dict[str, int]] = {name: {} for name in instances}
    for version_id, chosen in holders.items():
        for instance in chosen:
            on[instance][servable[version_id].triton_name] = version_id
    recorded: dict[str, dict[str, int]] = {name: {} for name in instances}
    for (instance, version_id), fact in rows.items():
        if fact.row.state == "ready":
            recorded[instance][fact.triton_name] = version_id
    return Desired(on=on, holders=holders, recorded=recorded, pinned=pinned)


def place_version(
    session: Session,
    *,
    version_id: int,
    instances: Mapping[str, int],
    slots: Sequence[Slot],
    default_replicas: int,
    now: datetime,
) -> frozenset[str]:
    """Choose (and record) the instances one version should be loaded on now, e.g. for an upload."""
    names = {row_id: name for name, row_id in instances.items()}
    facts = repository.placement_facts(session, instances.values(), version_id=version_id)
    replicas, size = repository.replicas_of(session, version_id)
    mine = {names[f.row.instance_id]: f for f in facts if f.row.version_id == version_id}
    current = {version_id: {name for name, f in mine.items() if f.row.desired == "ready"}}
    base = [
        (names[f.row.instance_id], f.size_bytes)
        for f in facts
        if f.row.version_id != version_id and f.row.desired == "ready"
    ]
    wanted = [Servable(version_id, replicas or default_replicas, size)]
    chosen = plan(wanted, current, slots, base=base)[version_id]
    for instance in chosen:
        fact = mine.get(instance)
        _want(session, fact, instances[instance], version_id, now)
    for instance, fact in mine.items():
        if instance not in chosen and fact.row.desired == "ready":
            fact.row.desired, fact.row.updated_at = "absent", now
    return chosen


def _want(
    session: Session,
    fact: repository.PlacementFacts | None,
    instance_id: int,
    version_id: int,
    now: datetime,
) -> None:
    if fact is None:  # no row, or one the policy did not read (not desired, not ready)
        repository.want_placement(session, instance_id=instance_id, version_id=version_id, now=now)
    elif fact.row.desired != "ready":
        fact.row.desired, fact.row.updated_at = "ready", now
