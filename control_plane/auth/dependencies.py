"""FastAPI dependencies that authenticate the caller and check its role."""

from __future__ import annotations

from fastapi import Request

from control_plane.auth.principal import Principal, Role
from control_plane.errors import Forbidden, Unauthorized
from control_plane.keys import service as keys
from control_plane.keys.secrets import is_secret
from control_plane.state import AppState

ADMIN_TOKEN_PRINCIPAL = Principal(role=Role.ADMIN, tenant_id=None, key_id=None, label="admin-token")


NO_BEARER = "missing or malformed Authorization header; expected 'Bearer <key>'"


def bearer_of(header: str) -> str | None:
    """The key of an `Authorization: Bearer <key>` value; None if it is not one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def bearer_token(request: Request) -> str:
    """The key from `Authorization: Bearer <key>`, or 401."""
    token = bearer_of(request.headers.get("authorization", ""))
    if token is None:
        raise Unauthorized(NO_BEARER)
    return token


def principal_for_key(state: AppState, token: str) -> Principal | None:
    """The caller a key stands for (bootstrap admin token or a stored key), None if invalid or revoked;
    KeyExpired (a 401 that says so) for an expired one."""
    admin_token = state.settings.admin_token
    if admin_token is not None and is_secret(token, admin_token.get_secret_value()):
        return ADMIN_TOKEN_PRINCIPAL
    with state.session_factory() as session:
        return keys.verify(session, token)


def authenticate(request: Request) -> Principal:
    """The caller behind the request's key (bootstrap admin token or a stored key), or 401."""
    principal = principal_for_key(request.app.state.cp, bearer_token(request))
    if principal is None:
        raise Unauthorized("invalid or revoked API key")
    return principal


def require_admin(request: Request) -> Principal:
    """The caller, who must be an admin (403 otherwise)."""
    principal = authenticate(request)
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return principal
