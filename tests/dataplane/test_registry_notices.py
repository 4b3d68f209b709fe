"""Routing changes between replicas over a real Postgres LISTEN/NOTIFY: a process skips its own
notifications (it acted on them at commit), reads only the placements again when only placements
changed elsewhere, and rebuilds the table (and runs the loop) for other changes."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db.session import make_engine, make_session_factory
from control_plane.routing.changes import (
    DESIRED,
    PLACEMENTS,
    ROUTING,
    Notice,
    install,
    mark_desired_changed,
    mark_placements_changed,
    mark_routing_changed,
    read_notice,
)
from control_plane.routing.watcher import RegistryWatcher


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
    origin = install(here, on_change=local.reload, on_placements=local.refresh_placements)
    install(elsewhere, on_change=lambda: None)
    watcher = RegistryWatcher(
        router=router,  # type: ignore[arg-type]
        database_url=database_url,
        refresh_s=3600,
        poll_s=3600,
        on_desired=lambda: desired.update(["loop"]),
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
    _commit(elsewhere, mark_desired_changed)
    _until(lambda: router.calls["reload"] == 3, router)
    assert desired["loop"] == 1 and router.calls["placements"] == 1


@pytest.mark.parametrize(
    "payload, notice",
    [
        ("", Notice(ROUTING, None)),  # earlier releases: a full change from elsewhere
        ("desired", Notice(DESIRED, None)),
        ("placements 0123abcd", Notice(PLACEMENTS, "0123abcd")),
        ("desired 0123abcd", Notice(DESIRED, "0123abcd")),
        ("something-new 0123abcd", Notice(ROUTING, "0123abcd")),  # unknown kinds: rebuild
    ],
)
def test_notices_are_read_from_old_and_new_payloads(payload: str, notice: Notice) -> None:
    assert read_notice(payload) == notice
