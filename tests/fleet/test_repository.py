"""The fleet repository's questions about one placement, against a real Postgres."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from control_plane.db.models import Placement
from control_plane.db.session import transaction
from control_plane.fleet import repository
from tests.fleet.conftest import Fleet
from tests.support import builders


def _place(fleet: Fleet, instance: str, version_id: int, *, desired: str) -> None:
    with transaction(fleet.session_factory) as session:
        ids = repository.instance_ids(session, [instance])
        repository.upsert_placement(
            session,
            instance_id=ids[instance],
            version_id=version_id,
            state="ready",
            desired=desired,
            now=datetime.now(UTC),
        )


def _wanted(fleet: Fleet, instance: str, version_id: int) -> bool:
    with fleet.session_factory() as session:
        return repository.wanted_on(session, instance=instance, version_id=version_id)


@pytest.mark.parametrize(
    ("state", "desired_here", "desired_elsewhere", "wanted"),
    [
        ("ready", "ready", None, True),  # desired here
        ("ready", "absent", None, False),  # moved away, or chosen for eviction
        ("ready", None, "ready", False),  # placed on another instance only
        ("ready", None, None, False),  # placed nowhere
        ("retired", "absent", None, True),  # released: the loop unloads it, not a move
        ("failed", None, None, True),
    ],
)
def test_wanted_on_reads_the_placement_here_and_the_registry_state(
    fleet: Fleet, state: str, desired_here: str | None, desired_elsewhere: str | None, wanted: bool
) -> None:
    fleet.endpoint("http://127.0.0.1:1", name="here")
    fleet.endpoint("http://127.0.0.1:2", name="there")
    version = fleet.version(state=state)
    if desired_here is not None:
        _place(fleet, "here", version.id, desired=desired_here)
    if desired_elsewhere is not None:
        _place(fleet, "there", version.id, desired=desired_elsewhere)
    assert _wanted(fleet, "here", version.id) is wanted


def test_wanted_on_a_deleted_version_or_an_unknown_instance(fleet: Fleet) -> None:
    fleet.endpoint("http://127.0.0.1:1", name="here")
    version = fleet.version(state="ready")
    assert _wanted(fleet, "here", version.id + 1000) is True  # gone from the registry: not ours to move
    assert _wanted(fleet, "nowhere", version.id) is False


def test_keep_placement_desires_the_version_again_on_that_instance_only(fleet: Fleet) -> None:
    fleet.endpoint("http://127.0.0.1:1", name="here")
    fleet.endpoint("http://127.0.0.1:2", name="there")
    version = fleet.version(state="ready")
    _place(fleet, "here", version.id, desired="absent")
    _place(fleet, "there", version.id, desired="absent")
    with transaction(fleet.session_factory) as session:
        repository.keep_placement(session, instance="here", version_id=version.id)
    assert _wanted(fleet, "here", version.id) is True
    assert _wanted(fleet, "there", version.id) is False
    with fleet.session_factory() as session:
        desired = set(session.scalars(select(Placement.desired).where(Placement.version_id == version.id)))
    assert desired == {"ready", "absent"}


def test_model_versions_placed_lists_live_versions_with_their_placements_in_order(fleet: Fleet) -> None:
    fleet.endpoint("http://127.0.0.1:1", name="b-instance")
    fleet.endpoint("http://127.0.0.1:2", name="a-instance")
    with transaction(fleet.session_factory) as session:
        tenant = builders.tenant(session, name=builders.unique_name("placed"))
        model = builders.model(session, tenant_row=tenant, format="python")
        other = builders.model(session, tenant_row=tenant, format="python")
        ids = {
            number: builders.version(session, model_row=model, number=number, state=state).id
            for number, state in ((3, "ready"), (1, "ready"), (2, "retired"), (4, "registered"))
        }
        elsewhere = builders.version(session, model_row=other, number=1, state="ready").id
        model_id = model.id
    _place(fleet, "b-instance", ids[1], desired="ready")
    _place(fleet, "a-instance", ids[1], desired="absent")
    _place(fleet, "a-instance", ids[2], desired="ready")
    _place(fleet, "a-instance", elsewhere, desired="ready")
    with fleet.session_factory() as session:
        placed = repository.model_versions_placed(session, model_id)
    assert [(p.version, p.state, [(i, d) for i, d, _, _ in p.placements]) for p in placed] == [
        (1, "ready", [("a-instance", "absent"), ("b-instance", "ready")]),
        (3, "ready", []),
        (4, "registered", []),
    ]
