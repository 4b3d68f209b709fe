"""Request-scoped dependencies: app state and the request's transaction; the threads of calls that wait for
loads."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import anyio
from fastapi import Request
from sqlalchemy.orm import Session

from control_plane.db.session import transaction
from control_plane.state import AppState


def get_state(request: Request) -> AppState:
    """The process-wide state built by the lifespan."""
    state: AppState = request.app.state.cp
    return state


def get_session(request: Request) -> Iterator[Session]:
    """The request's session: committed when the endpoint returns, rolled back if it raises."""
    with transaction(get_state(request).session_factory) as session:
        yield session


T = TypeVar("T")


async def waiting_for_loads(state: AppState, call: Callable[[], T]) -> T:
    """Run `call`, a management call that may wait minutes for a version's load (`/load`, a promote, a
    rollback), on threads of its own (`CP_LOAD_WAIT_THREADS`; past them, calls queue without a thread).
    Sync endpoints run on one pool of 40 threads: waits held there, of one tenant or of several, held up
    every other management request until the loads were done."""
    return await anyio.to_thread.run_sync(call, limiter=state.load_wait_limiter())
