"""Request-scoped dependencies: app state and the request's transaction."""

from __future__ import annotations

from collections.abc import Iterator

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
