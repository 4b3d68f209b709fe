"""The inference core's handling of a failed answer (`infer.start_forward`), with the upstream replaced by
a script: a server failure of a version the routes stopped calling resident meanwhile (another replica's
leader evicted it, ending its stubs under the request) is waited for and sent again, once; a failure of a
version still resident (a crash the request may have caused) is passed on, never sent again.

Found with two replicas under load: the follower's clients got 502 "Stub process ... is not healthy"
when the leader evicted a version they were using. The real stack's version of the same (a 404 from a
version unloaded behind the routes) is tests/residency/test_residency.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from types import SimpleNamespace
from typing import Any
from unittest.mock import MagicMock

import pytest

from control_plane.dataplane.exchange import Exchange, Reply
from control_plane.dataplane.infer import EVICTED_CHECK_S, http_gone, start_forward
from control_plane.dataplane.limits import TenantLimits
from control_plane.dataplane.upstream import UpstreamResponse
from control_plane.residency.manager import Residency
from tests.support.v2 import server_timing

NAME = "t--m--v1"


def _state() -> Any:
    inflight: Counter[str] = Counter()
    residency = Residency(session_factory=None, inflight=inflight)
    residency._demand = lambda name, explicit: None  # type: ignore[method-assign]  # the registry's part
    residency.resident = frozenset({NAME})
    return SimpleNamespace(
        limits=TenantLimits(max_concurrency=4), inflight=inflight, residency=residency, metrics=MagicMock()
    )


async def _forward(
    state: Any, answers: list[int], *, evicted_after: float | None, ex: Exchange | None = None
) -> tuple[Any, int]:
    """Forward one request; Triton answers `answers` in turn. With `evicted_after`, the routes stop
    calling the version resident that long after the first answer, and show it resident again (loaded
    anew) 0.2 s later. What the request was answered, and how often it was sent."""
    loop = asyncio.get_running_loop()
    ex = ex or Exchange({})
    ex.caller, ex.resolved = SimpleNamespace(tenant_id=1), SimpleNamespace(triton_name=NAME)  # type: ignore[assignment]
    sent: list[int] = []
    answered: asyncio.Future[Any] = loop.create_future()
    residency = state.residency

    def evicted() -> None:
        residency.resident = frozenset()

    def loaded_again() -> None:
        residency.resident = frozenset({NAME})
        residency._settle(NAME, None)

    def send(settle: Any) -> None:
        status = answers[len(sent)]
        sent.append(status)
        loop.call_soon(settle, UpstreamResponse(status, {}, b"{}"))
        if evicted_after is not None and len(sent) == 1:
            loop.call_later(evicted_after, evicted)
            loop.call_later(evicted_after + 0.2, loaded_again)

    start_forward(state, ex, send=send, done=answered.set_result, gone=http_gone)
    outcome = await asyncio.wait_for(answered, 5)
    return outcome, len(sent)


@pytest.mark.parametrize("evicted_after", [0.0, EVICTED_CHECK_S / 3])
def test_a_failure_of_a_version_evicted_under_the_request_is_sent_again(evicted_after: float) -> None:
    state = _state()
    outcome, sends = asyncio.run(_forward(state, [500, 200], evicted_after=evicted_after))
    assert (outcome.status, sends) == (200, 2)
    assert state.limits.in_flight(1) == 0 and state.inflight[NAME] == 0
    state.residency.stop()


def test_server_timing_shows_the_wait_for_the_version_apart() -> None:
    """A request that waited for its version (here: loaded again after an eviction under it: the failed
    answer waits `EVICTED_CHECK_S` for the news, then 0.1 s for the load) has a `load` entry in its
    Server-Timing, taken out of `gateway`; one served at once has none."""
    state = _state()
    waited, served = Exchange({}), Exchange({})
    assert asyncio.run(_forward(state, [500, 200], evicted_after=0.0, ex=waited))[1] == 2
    assert asyncio.run(_forward(state, [200], evicted_after=None, ex=served))[1] == 1
    state.residency.stop()
    reply = Reply(200, b"application/json", b"{}")
    timing = dict(waited.response_headers(reply))[b"server-timing"].decode()
    entries = server_timing(timing)
    assert list(entries) == ["gateway", "load", "triton"], timing
    assert 50 <= entries["load"] < 1000 and 0 <= entries["gateway"] < 1000, timing
    assert b"load;dur=" not in served.response_header_block(reply)
    assert b"gateway;dur=" in served.response_header_block(reply)


@pytest.mark.parametrize("status", [500, 503])
def test_a_failure_of_a_version_still_resident_is_passed_on_not_sent_again(status: int) -> None:
    state = _state()
    outcome, sends = asyncio.run(_forward(state, [status, 200], evicted_after=None))
    assert (outcome.status, sends) == (status, 1)
    assert state.limits.in_flight(1) == 0
    state.residency.stop()


def test_a_client_error_is_never_sent_again_even_if_the_version_left() -> None:
    state = _state()
    outcome, sends = asyncio.run(_forward(state, [400, 200], evicted_after=0.0))
    assert (outcome.status, sends) == (400, 1)
    state.residency.stop()


def test_a_request_is_sent_again_at_most_once() -> None:
    state = _state()
    outcome, sends = asyncio.run(_forward(state, [500, 500, 200], evicted_after=0.0))
    assert (outcome.status, sends) == (500, 2)
    assert state.limits.in_flight(1) == 0
    state.residency.stop()
