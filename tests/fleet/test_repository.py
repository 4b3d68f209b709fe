"""The fleet repository's questions about one placement (and residency's about a pin, which an eviction
asks too), against a real Postgres."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from control_plane.db.models import Alias, Model, ModelVersion, Placement
from control_plane.db.session import transaction
from control_plane.fleet import repository
from control_plane.fleet.actions import Actions
from control_plane.fleet.backoff import Backoff
from control_plane.fleet.observed import Observed
from control_plane.residency import repository as residency_repository
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


def _pinned_model(fleet: Fleet, *, pins: list[str] | None) -> tuple[int, int, int]:
    """A model with versions 1 (alias `production`) and 2 (alias `staging`), pinning `pins`: their ids and the
    model's."""
    with transaction(fleet.session_factory) as session:
        tenant = builders.tenant(session, name=builders.unique_name("pins"))
        model = builders.model(session, tenant_row=tenant, format="python", pinned_aliases=pins)
        one = builders.version(session, model_row=model, number=1, state="ready")
        two = builders.version(session, model_row=model, number=2, state="ready")
        session.add_all(
            [
                Alias(model_id=model.id, name="production", version_id=one.id),
                Alias(model_id=model.id, name="staging", version_id=two.id),
            ]
        )
        return one.id, two.id, model.id


@pytest.mark.parametrize(
    ("pins", "pinned"),
    [
        (None, (False, False)),
        ([], (False, False)),
        (["production"], (True, False)),
        (["production", "staging"], (True, True)),
        (["canary"], (False, False)),  # an alias the model does not have
    ],
)
def test_is_pinned_reads_the_models_pinned_aliases(
    fleet: Fleet, pins: list[str] | None, pinned: tuple[bool, bool]
) -> None:
    one, two, _ = _pinned_model(fleet, pins=pins)
    with fleet.session_factory() as session:
        assert (
            residency_repository.is_pinned(session, one),
            residency_repository.is_pinned(session, two),
        ) == pinned
        assert residency_repository.pinned_versions(session) & {one, two} == {
            v for v, p in zip((one, two), pinned, strict=True) if p
        }, "the same answer as the pass's own read of every pin"


def test_a_deleted_models_aliases_pin_nothing(fleet: Fleet) -> None:
    one, _, model_id = _pinned_model(fleet, pins=["production"])
    with transaction(fleet.session_factory) as session:
        session.get_one(Model, model_id).deleted_at = datetime.now(UTC)
    with fleet.session_factory() as session:
        assert residency_repository.is_pinned(session, one) is False


class _Unloads:
    """A Triton client that records unloads."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def unload_model(self, name: str) -> None:
        self.names.append(name)


@pytest.mark.parametrize("pinned_meanwhile", [False, True])
def test_an_eviction_keeps_a_version_pinned_after_its_pass_chose_it(
    fleet: Fleet, pinned_meanwhile: bool
) -> None:
    """The pass read the pins, chose the version and wrote its placement desired absent; an admin pins its
    alias before the eviction's unload: the eviction keeps it (it was unloaded once and loaded back)."""
    fleet.endpoint("http://127.0.0.1:1", name="here")
    one, _, model_id = _pinned_model(fleet, pins=None)
    _place(fleet, "here", one, desired="absent")
    if pinned_meanwhile:
        with transaction(fleet.session_factory) as session:
            session.get_one(Model, model_id).pinned_aliases = ["production"]
    client = _Unloads()
    actions = Actions(
        session_factory=fleet.session_factory,
        loader=SimpleNamespace(lock_for=lambda name: threading.Lock()),  # type: ignore[arg-type]
        observed=Observed(),
        backoff=Backoff(initial_s=1.0, max_s=2.0),
        loads_per_instance=1,
        unload_grace_s=0.0,
        on_load_done=lambda loaded: None,
        rerun=lambda: None,
    )
    endpoint: Any = SimpleNamespace(name="here", client=client)
    try:
        evicted = actions._evict(endpoint, "the-version", one)
    finally:
        actions.stop()
    assert evicted is not pinned_meanwhile
    assert client.names == ([] if pinned_meanwhile else ["the-version"])
    assert _wanted(fleet, "here", one) is pinned_meanwhile, "a kept version's placement is desired again"


def test_a_measurement_at_a_load_keeps_what_the_version_came_to_hold_before(fleet: Fleet) -> None:
    version = fleet.version(state="ready")
    mib = 2**20

    def measured(value: int) -> int | None:
        with transaction(fleet.session_factory) as session:
            residency_repository.record_measurement(
                session, version_id=version.id, memory_bytes=value, source="stub", load_seconds=0.1
            )
        with fleet.session_factory() as session:
            return session.get_one(ModelVersion, version.id).memory_bytes

    assert measured(45 * mib) == 45 * mib, "a first measurement"
    with transaction(fleet.session_factory) as session:
        residency_repository.record_growth(session, {version.id: 130 * mib})  # after its first inference
    assert measured(45 * mib) == 130 * mib, "reloaded: measured small again, counted at what it grows to"
    with fleet.session_factory() as session:
        assert session.get_one(ModelVersion, version.id).memory_source == residency_repository.GROWN
    with transaction(fleet.session_factory) as session:
        residency_repository.record_growth(session, {version.id: 50 * mib})  # a spike it freed: back down
    assert measured(45 * mib) == 50 * mib
    assert measured(140 * mib) == 140 * mib
    with fleet.session_factory() as session:
        assert session.get_one(ModelVersion, version.id).memory_source == "stub", "a load measured more"
