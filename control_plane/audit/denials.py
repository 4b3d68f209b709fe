"""Audit of denied management calls (401, 403), capped so that a flood cannot fill the table.

At most `per_window` denials are written per window (60 s) per process; the rest are only counted,
and the count is logged when the window closes. The cap is checked before anything else, so a flood
costs a lock and an increment per call beyond it, not a database write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from control_plane.auth.dependencies import authenticate, bearer_token
from control_plane.db.models import AuditEvent
from control_plane.db.session import transaction
from control_plane.errors import AppError, Forbidden, Unauthorized, error_response
from control_plane.keys.secrets import prefix_of
from control_plane.names import is_valid_name

log = logging.getLogger(__name__)
DENIED = "request.denied"
ANONYMOUS = "anonymous"
DEFAULT_PER_WINDOW = 60


class DenialCap:
    """A fixed-window counter: True for the first `per_window` denials of each window."""

    def __init__(
        self, per_window: int, *, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.per_window = per_window
        self.window_s = window_s
        self.clock = clock
        self.dropped_total = 0
        self._lock = threading.Lock()
        self._window_start = clock()
        self._written = 0
        self._dropped = 0

    def admit(self) -> bool:
        """Whether this denial may be written (counts it either way)."""
        with self._lock:
            now = self.clock()
            if now - self._window_start >= self.window_s:
                self._close_window(now)
            if self._written < self.per_window:
                self._written += 1
                return True
            self._dropped += 1
            self.dropped_total += 1
            return False

    def _close_window(self, now: float) -> None:
        if self._dropped:
            log.warning(
                "audit: %d denied management calls not written in the last %.0f s (cap %d per window)",
                self._dropped,
                self.window_s,
                self.per_window,
            )
        self._window_start, self._written, self._dropped = now, 0, 0


def _actor(request: Request, exc: AppError) -> tuple[str, int | None, str | None]:
    """Who was denied: (label, key id, presented key prefix); 401s are anonymous."""
    try:
        token = bearer_token(request)
    except Unauthorized:
        return ANONYMOUS, None, None
    if isinstance(exc, Forbidden):
        try:
            principal = authenticate(request)
        except AppError:
            return ANONYMOUS, None, prefix_of(token)
        return principal.label, principal.key_id, prefix_of(token)
    return ANONYMOUS, None, prefix_of(token)


def _scope(path: str) -> tuple[str | None, str | None]:
    """The tenant and model named by a `/v1/tenants/{t}/models/{m}/...` path, when they are valid names."""
    parts = path.strip("/").split("/")
    tenant = parts[2] if len(parts) > 2 and parts[1] == "tenants" else None
    model = parts[4] if tenant is not None and len(parts) > 4 and parts[3] == "models" else None
    return (
        tenant if tenant is not None and is_valid_name(tenant) else None,
        model if model is not None and is_valid_name(model) else None,
    )


def write_denial(request: Request, exc: AppError) -> None:
    """One `request.denied` audit row with outcome `failure`, in its own transaction."""
    actor, key_id, prefix = _actor(request, exc)
    tenant, model = _scope(request.url.path)
    event = AuditEvent(
        actor=actor[:100],
        actor_key_id=key_id,
        action=DENIED,
        tenant=tenant,
        model=model,
        target=f"{request.method} {request.url.path}"[:300],
        after={"status": exc.status_code, "detail": exc.message, "key_prefix": prefix},
        outcome="failure",
        request_id=getattr(request.state, "request_id", None),
    )
    with transaction(request.app.state.cp.session_factory) as session:
        session.add(event)


def install(app: FastAPI, *, per_window: int = DEFAULT_PER_WINDOW) -> DenialCap:
    """Audit the app's 401 and 403 answers on /v1 (registered for those errors, ahead of AppError's)."""
    cap = DenialCap(per_window)

    async def denied(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, AppError)
        if request.url.path.startswith("/v1/") and cap.admit():
            try:
                await run_in_threadpool(write_denial, request, exc)
            except Exception:  # the caller still gets its 401/403; the audit gap is logged
                log.exception("audit: writing a denied call failed")
        return error_response(exc)

    app.add_exception_handler(Unauthorized, denied)
    app.add_exception_handler(Forbidden, denied)
    app.state.denial_cap = cap
    return cap
