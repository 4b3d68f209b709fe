"""Routing changes between replicas over a real Postgres LISTEN/NOTIFY: a process skips its own
notifications (it acted on them at commit), reads only the placements again when only placements
changed elsewhere (a request for a load included: it also runs the loop), and rebuilds the table (and
runs the loop for desired changes) for other changes. Which commits are routing changes at all."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.models import Model, ModelReplicas, ModelVersion, Placement, TritonInstance
from control_plane.db.session import make_engine, make_session_factory
from control_plane.routing.changes import (
    PLACEMENTS,
    ROUTING,
    Notice,
    install,
    mark_desired_changed,
    mark_placements_changed,
    mark_routing_changed,
    notice_payload,
    read_notice,
)
from control_plane.routing.watcher import RegistryWatcher
from tests.support import builders


class _Router:
    """Counts what the watcher asks of the router."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.changed = threading.Condition()

    def _count(self, what: str) -> None:
        with self.changed:
            self.calls[what] += 1
            self.changed.notify_all()

    def reload(self) -> None:
        self._count("reload")

    def refresh_placements(self) -> None:
        self._count("placements")


Replicas = tuple[sessionmaker[Session], sessionmaker[Session], _Router, Counter[str]]


def _factory(url: str) -> sessionmaker[Session]:
    return make_session_factory(make_engine(url, pool_size=1))


@pytest.fixture
def replicas(database_url: str) -> Iterator[Replicas]:
    """This replica's sessions and watcher, and another replica's sessions (its own origin)."""
    here, elsewhere = _factory(database_url), _factory(database_url)
    router, desired = _Router(), Counter[str]()
    local = _Router()

    def on_desired() -> None:  # counted where `_until` is woken
        with router.changed:
            desired.update(["loop"])
            router.changed.notify_all()

    origin = install(here, on_change=local.reload, on_placements=local.refresh_placements)
    install(elsewhere, on_change=lambda: None)
    watcher = RegistryWatcher(
        router=router,  # type: ignore[arg-type]
        database_url=database_url,
        refresh_s=3600,
        poll_s=3600,
        on_desired=on_desired,
        origin=origin,
    )
    watcher.start()
    _until(lambda: router.calls["reload"] == 1, router)  # the reload after LISTEN
    try:
        yield here, elsewhere, router, desired
    finally:
        watcher.stop()
        for factory in (here, elsewhere):
            engine = factory.kw["bind"]
            engine.dispose()


def _until(check: Callable[[], bool], router: _Router, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    with router.changed:
        while not check():
            left = deadline - time.monotonic()
            assert left > 0, dict(router.calls)
            router.changed.wait(left)


def _commit(factory: sessionmaker[Session], mark: Callable[[Session], None]) -> None:
    with factory() as session:
        mark(session)
        session.commit()


def test_own_notifications_are_skipped_and_placements_only_refresh_placements(
    replicas: Replicas,
) -> None:
    here, elsewhere, router, desired = replicas
    for mark in (mark_routing_changed, mark_placements_changed, mark_desired_changed):
        _commit(here, mark)  # this replica's own: acted on at commit
    _commit(elsewhere, mark_placements_changed)
    _until(lambda: router.calls["placements"] == 1, router)
    assert router.calls["reload"] == 1 and not desired, "its own three commits caused nothing"
    _commit(elsewhere, mark_routing_changed)
    _until(lambda: router.calls["reload"] == 2, router)
    assert not desired
    _commit(elsewhere, mark_desired_changed)  # a request for a load: placements, and the loop
    _until(lambda: router.calls["placements"] == 2 and desired["loop"] == 1, router)
    assert router.calls["reload"] == 2
    _commit(elsewhere, lambda session: mark_routing_changed(session, desired=True))
    _until(lambda: router.calls["reload"] == 3 and desired["loop"] == 2, router)  # the loop after reload
    assert router.calls["placements"] == 2


@pytest.mark.parametrize(
    "payload, notice",
    [
        ("", Notice(ROUTING, None)),  # earlier releases: a full change from elsewhere
        ("desired", Notice(ROUTING, None, desired=True)),
        ("placements 0123abcd", Notice(PLACEMENTS, "0123abcd")),
        ("routing 0123abcd", Notice(ROUTING, "0123abcd")),
        ("desired 0123abcd", Notice(ROUTING, "0123abcd", desired=True)),
        ("desired 0123abcd placements", Notice(PLACEMENTS, "0123abcd", desired=True)),
        ("desired 0123abcd something-new", Notice(ROUTING, "0123abcd", desired=True)),
        ("something-new 0123abcd", Notice(ROUTING, "0123abcd")),  # unknown kinds: rebuild
    ],
)
def test_notices_are_read_from_old_and_new_payloads(payload: str, notice: Notice) -> None:
    assert read_notice(payload) == notice


@pytest.mark.parametrize("routing", [True, False])
@pytest.mark.parametrize("desired", [True, False])
def test_payloads_read_back_as_written(routing: bool, desired: bool) -> None:
    notice = read_notice(notice_payload("0123abcd", routing=routing, desired=desired))
    assert notice == Notice(ROUTING if routing else PLACEMENTS, "0123abcd", desired)


def test_an_earlier_release_reads_a_desired_placements_change_as_desired() -> None:
    """What a replica of the previous release did with the payload: `kind, _, origin = partition(" ")`,
    `desired` runs its loop (and rebuilds its table), as it did for every desired change."""
    kind, _, origin = notice_payload("0123abcd", routing=False, desired=True).partition(" ")
    assert kind == "desired" and origin and origin != "0123abcd"


class _Seen:
    """What a process's own commits asked of it (`install`'s callbacks)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def __call__(self, what: str) -> Callable[[], None]:
        return lambda: self.calls.update([what])


@pytest.fixture
def watched(database_url: str) -> Iterator[tuple[sessionmaker[Session], _Seen]]:
    factory, seen = _factory(database_url), _Seen()
    install(factory, on_change=seen("rebuild"), on_desired=seen("loop"), on_placements=seen("placements"))
    try:
        yield factory, seen
    finally:
        factory.kw["bind"].dispose()


def _version(factory: sessionmaker[Session], *, state: str, state_message: str | None = None) -> int:
    with factory() as session:
        tenant = builders.tenant(session)
        model = builders.model(session, tenant_row=tenant)
        version_id = builders.version(session, model_row=model, state=state, state_message=state_message).id
        session.commit()
    return version_id


def _change(factory: sessionmaker[Session], seen: _Seen, change: Callable[[Session], None]) -> Counter[str]:
    seen.calls.clear()
    with factory() as session:
        change(session)
        session.commit()
    return Counter(seen.calls)


@pytest.mark.parametrize(
    "before, after",
    [("registered", "ready"), ("unloaded", "ready"), ("ready", "loading"), ("loading", "ready")],
)
def test_a_version_moving_between_states_routing_treats_alike_is_no_routing_change(
    watched: tuple[sessionmaker[Session], _Seen], before: str, after: str
) -> None:
    factory, seen = watched
    version_id = _version(factory, state=before)

    def move(session: Session) -> None:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        version.state, version.state_message = after, None

    assert _change(factory, seen, move) == Counter(["loop"])  # the loop places it; routing is as it was


@pytest.mark.parametrize(
    "change",
    [
        {"state": "failed", "state_message": "the stub died"},  # requests get 503 with the reason
        {"state": "retired"},  # gone from the table
        {"config_text": 'name: "x"\nmax_batch_size: 4'},  # what its requests must look like
    ],
)
def test_a_version_change_routing_sees_rebuilds_the_table(
    watched: tuple[sessionmaker[Session], _Seen], change: dict[str, str]
) -> None:
    factory, seen = watched
    version_id = _version(factory, state="ready")

    def apply(session: Session) -> None:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        for key, value in change.items():
            setattr(version, key, value)

    assert _change(factory, seen, apply) == Counter(["loop", "rebuild"])


def test_a_failed_versions_new_reason_rebuilds_and_a_new_version_is_a_routing_change(
    watched: tuple[sessionmaker[Session], _Seen],
) -> None:
    factory, seen = watched
    version_id = _version(factory, state="failed", state_message="first reason")

    def reason(session: Session) -> None:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        version.state_message = "second reason"

    assert _change(factory, seen, reason) == Counter(["loop", "rebuild"])

    def add(session: Session) -> None:
        version = session.get(ModelVersion, version_id)
        assert version is not None
        builders.version(session, model_row=session.get_one(Model, version.model_id), number=2)

    assert _change(factory, seen, add) == Counter(["loop", "rebuild"])


def test_placements_and_replicas_are_no_rebuild(watched: tuple[sessionmaker[Session], _Seen]) -> None:
    factory, seen = watched
    version_id = _version(factory, state="ready")
    with factory() as session:
        instance = TritonInstance(
            name=builders.unique_name("i"), http_url="http://127.0.0.1:1", grpc_url="127.0.0.1:2"
        )
        session.add(instance)
        session.commit()
        instance_id = instance.id

    def place(session: Session) -> None:
        session.add(Placement(instance_id=instance_id, version_id=version_id, state="ready"))

    assert _change(factory, seen, place) == Counter(["placements"])

    def replicas(session: Session) -> None:
        version = session.get_one(ModelVersion, version_id)
        session.add(ModelReplicas(model_id=version.model_id, replicas=2))

    assert _change(factory, seen, replicas) == Counter(["loop"])


def test_a_commits_callbacks_run_once_its_connection_is_back_in_the_pool(database_url: str) -> None:
    """The router's rebuild reads the registry with a connection of its own: a committer that still held
    its own meanwhile needed two, and a burst of commits ran the pool dry (every tenant waited)."""
    factory = _factory(database_url)  # a pool of one connection
    pool = factory.kw["bind"].pool
    held: list[int] = []
    install(
        factory,
        on_change=lambda: held.append(pool.checkedout()),
        on_desired=lambda: held.append(pool.checkedout()),
    )
    try:
        _commit(factory, mark_routing_changed)
        _commit(factory, lambda session: mark_routing_changed(session, desired=True))
        with factory() as session:  # a savepoint's end is no commit: nothing runs for it
            mark_routing_changed(session)
            session.begin_nested().commit()
            session.rollback()
    finally:
        factory.kw["bind"].dispose()

    assert held == [0, 0, 0]  # reload, then desired and reload: none while the session held its connection
