"""`Router.reload` under a burst of commits: each caller gets a table that covers its own commit, and
callers that arrive while a rebuild runs share the next one (a unit test: the table build is replaced
by one that records which commits it saw)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest

from control_plane.routing import router as router_module
from control_plane.routing.router import Router
from control_plane.routing.table import RoutingTable

commits = 0  # commits made so far (a counter the fake build reads, as a real one reads the registry)
builds = 0
lock = threading.Lock()


def _build(session: Any) -> RoutingTable:
    global builds
    with lock:
        seen = commits
        builds += 1
    time.sleep(0.02)  # a rebuild takes a while: commits keep arriving meanwhile
    return RoutingTable(models={}, tenants={0: str(seen)}, tenant_ids={}, keys={})


def test_a_burst_of_reloads_shares_rebuilds_and_each_sees_its_own_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    global commits, builds
    commits = builds = 0
    monkeypatch.setattr(router_module, "build_table", _build)
    router = Router(lambda: _NullSession())  # type: ignore[arg-type, return-value]
    told: list[RoutingTable] = []
    router.listeners.append(told.append)
    stale: list[tuple[int, int]] = []

    def commit_then_reload() -> None:
        global commits
        with lock:
            commits += 1
            mine = commits
        router.reload()
        covered = int(router.table.tenants[0])
        if covered < mine:
            stale.append((mine, covered))

    _at_once([commit_then_reload] * 40)
    assert stale == [], "a reload returned with a table from before its caller's commit"
    assert builds < 20, f"{builds} rebuilds for 40 reloads"
    assert len(told) == builds and int(router.table.tenants[0]) == 40


def _build_with_placements(session: Any) -> RoutingTable:
    table = _build(session)
    return RoutingTable(
        models={}, tenants=table.tenants, tenant_ids={}, keys={}, placements={"seen": (table.tenants[0],)}
    )


def _placements(session: Any) -> dict[str, tuple[str, ...]]:
    global builds
    with lock:
        seen = commits
        builds += 1
    time.sleep(0.01)
    return {"seen": (str(seen),)}


def test_placement_refreshes_are_shared_too_and_a_rebuild_covers_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Loads, evictions and requests for loads commit placements many times a second: refreshes that
    arrive while one runs share the next, a full rebuild counts as one, and every caller still gets a
    table that covers its commit (the full rebuild's callers the whole table)."""
    global commits, builds
    commits = builds = 0
    monkeypatch.setattr(router_module, "build_table", _build_with_placements)
    monkeypatch.setattr(router_module, "ready_placements", _placements)
    monkeypatch.setattr(router_module, "resident_names", lambda session: frozenset())
    router = Router(lambda: _NullSession())  # type: ignore[arg-type, return-value]
    stale: list[tuple[str, int, int]] = []

    def commit_then(full: bool) -> None:
        global commits
        with lock:
            commits += 1
            mine = commits
        if full:
            router.reload()
            covered = int(router.table.tenants[0])
        else:
            router.refresh_placements()
            covered = int(router.table.placements["seen"][0])
        if covered < mine:
            stale.append(("reload" if full else "refresh", mine, covered))

    _at_once([partial(commit_then, i % 5 == 0) for i in range(60)])
    assert stale == [], "a caller got a table from before its commit"
    assert builds < 30, f"{builds} reads for 60 calls"


def _at_once(calls: list[Callable[[], None]]) -> None:
    """Run each call in a thread of its own, all started before any is waited for."""
    threads = [threading.Thread(target=call) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class _NullSession:
    def __enter__(self) -> _NullSession:
        return self

    def __exit__(self, *_: object) -> None:
        return None
