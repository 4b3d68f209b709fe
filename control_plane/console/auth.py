"""Who is signed in to the console: the session cookie opened, its key checked as the API checks keys.

Every request re-checks the key (a revoked key ends the session at once). Consumer keys are refused:
they may only infer. Forms that change anything carry the session's CSRF token, and any POST from
another origin is refused; the cookie itself is SameSite=Strict, HttpOnly, scoped to /console.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request
from starlette.responses import Response

from control_plane.auth.context import RequestContext
from control_plane.auth.dependencies import principal_for_key
from control_plane.auth.principal import Principal, Role
from control_plane.console.cookies import COOKIE, ConsoleSession, SessionCodec
from control_plane.errors import AppError, Forbidden
from control_plane.keys.service import KeyExpired
from control_plane.state import AppState

CONSUMER_REFUSED = "consumer keys may only call inference endpoints; sign in with a publisher or admin key"


class SignInRequired(AppError):
    """No valid session: the browser is sent to the sign-in page."""

    status_code = 401
    kind = "Unauthorized"


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    """The signed-in caller: principal, session (CSRF token) and what audit entries carry."""

    principal: Principal
    session: ConsoleSession
    ctx: RequestContext

    @property
    def is_admin(self) -> bool:
        """Admins see every tenant, the audit log and the instances."""
        return self.principal.is_admin


def app_state(request: Request) -> AppState:
    """The control plane's state (the console is a sub-app of the API app)."""
    state: AppState = request.app.state.control_plane.state.cp
    return state


def codec(request: Request) -> SessionCodec:
    """The console's cookie codec."""
    found: SessionCodec = request.app.state.codec
    return found


def check_key(state: AppState, key: str) -> Principal:
    """The principal of a key typed at sign-in; 401 if unknown or revoked, 403 for consumer keys."""
    try:
        principal = principal_for_key(state, key) if key and len(key) <= 512 else None
    except KeyExpired as exc:
        raise SignInRequired(exc.message) from None
    if principal is None:
        raise SignInRequired("invalid or revoked API key")
    if principal.role is Role.CONSUMER:
        raise Forbidden(CONSUMER_REFUSED)
    return principal


def current_user(request: Request) -> Iterator[ConsoleUser]:
    """The signed-in user (dependency of every page but sign-in), holding one of its tenant's management
    requests (`tenants/throttle.py`: a page's promote may wait minutes for a load) until the page is done;
    SignInRequired otherwise."""
    session = codec(request).open(request.cookies.get(COOKIE))
    if session is None:
        raise SignInRequired("sign in with an API key")
    try:
        principal = principal_for_key(app_state(request), session.key)
    except KeyExpired:
        raise SignInRequired("the key of this session expired; sign in with a new one") from None
    if principal is None or principal.role is Role.CONSUMER:
        raise SignInRequired("the key of this session is no longer valid; sign in again")
    user = ConsoleUser(
        principal=principal,
        session=session,
        ctx=RequestContext(principal=principal, request_id=getattr(request.state, "request_id", None)),
    )
    request.state.console_user = user
    state = app_state(request)
    with state.api_throttle.held(principal, state.router.table):
        yield user


def same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser says comes from another site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise Forbidden("cross-site form posts are refused")
    origin = request.headers.get("origin")
    # The host only: behind a proxy that ends TLS the app sees http while the browser says https.
    if origin is not None and urlsplit(origin).netloc != request.url.netloc:
        raise Forbidden("cross-origin form posts are refused")


def check_csrf(request: Request, user: ConsoleUser, token: str | None) -> None:
    """The form's token must be the session's (and the request from this origin)."""
    same_origin(request)
    if token is None or not hmac.compare_digest(token.encode(), user.session.csrf.encode()):
        raise Forbidden("the form has expired or did not come from this console; reload the page")


def set_session_cookie(request: Request, response: Response, session: ConsoleSession) -> None:
    """Store the sealed session in an HttpOnly, SameSite=Strict cookie scoped to the console."""
    response.set_cookie(
        COOKIE,
        codec(request).seal(session),
        max_age=codec(request).max_age_s,
        path=console_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(request: Request, response: Response) -> None:
    """Remove the session cookie."""
    response.delete_cookie(COOKIE, path=console_path(request), httponly=True, samesite="strict")


def console_path(request: Request) -> str:
    """Where the console is mounted (root path included), e.g. `/console`."""
    return str(request.scope.get("root_path", "")).rstrip("/") or "/"
