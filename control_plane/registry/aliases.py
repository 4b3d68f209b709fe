"""Who may move which alias."""

from __future__ import annotations

from control_plane.auth.context import RequestContext
from control_plane.errors import Forbidden, InvalidRequest
from control_plane.names import is_valid_name
from control_plane.settings import Settings


def check_may_move(*, ctx: RequestContext, alias_name: str, settings: Settings, verb: str = "move") -> None:
    """Validate the alias name; only admins move (or `verb`: delete) protected aliases."""
    if not is_valid_name(alias_name):
        raise InvalidRequest(f"invalid alias name {alias_name!r}")
    if alias_name in settings.protected_aliases and not ctx.principal.is_admin:
        raise Forbidden(f"alias '{alias_name}' is protected: only admins may {verb} it")
