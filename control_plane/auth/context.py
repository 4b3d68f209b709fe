"""Who is asking, and under which request id: the dependency every management endpoint takes."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, Request

from control_plane.auth.dependencies import authenticate
from control_plane.auth.principal import Principal, Role
from control_plane.errors import Forbidden


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The authenticated caller and the request id that audit events carry."""

    principal: Principal
    request_id: str | None


def _context(request: Request, principal: Principal) -> RequestContext:
    return RequestContext(principal=principal, request_id=getattr(request.state, "request_id", None))


def request_context(request: Request, principal: Principal = Depends(authenticate)) -> RequestContext:
    """Management caller: publishers and admins (consumers may only infer)."""
    if principal.role is Role.CONSUMER:
        raise Forbidden("consumer keys may only call inference endpoints")
    return _context(request, principal)


def admin_context(request: Request, principal: Principal = Depends(authenticate)) -> RequestContext:
    """Admin-only caller."""
    if not principal.is_admin:
        raise Forbidden("admin role required")
    return _context(request, principal)
