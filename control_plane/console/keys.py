"""Console pages of a tenant's API keys (admins, as in the API): list, create (the secret shown once), revoke.

They call the keys service as `/v1/tenants/{t}/keys` does, so expiry rules (`CP_KEY_MAX_TTL_S`, never after
the creator's own key) and the audit log are the same.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from control_plane import paging
from control_plane.auth.principal import Role
from control_plane.console.actions import confirm_page
from control_plane.console.auth import ConsoleUser, app_state, check_csrf, console_path, current_user
from control_plane.console.render import page
from control_plane.db.session import transaction
from control_plane.errors import Forbidden, InvalidRequest
from control_plane.keys import service as keys
from control_plane.keys.schemas import KeyOut
from control_plane.paging import Page
from control_plane.tenants import service as tenants
from control_plane.timestamps import as_utc

router = APIRouter()
KEYS = "/tenants/{tenant}/keys"
KeyId = Annotated[int, Path(ge=1, le=2**63 - 1)]
ROLES = (Role.PUBLISHER.value, Role.CONSUMER.value)
MOST_DAYS = 36500  # 100 years, the API's bound too


def _admin(user: ConsoleUser) -> None:
    if not user.is_admin:
        raise Forbidden("only admins manage keys")


def _days(value: str | None) -> int | None:
    """Days until a new key expires, typed in the form (blank: the default), or 422 in the user's terms."""
    text = (value or "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MOST_DAYS:
        raise InvalidRequest(f"expires in: a whole number of days from 1 to {MOST_DAYS}, not {text!r}")
    return int(text)


def _keys_url(request: Request, tenant: str) -> str:
    return f"{console_path(request)}/tenants/{quote(tenant)}/keys"


@router.get(KEYS, response_class=HTMLResponse)
def keys_page(
    request: Request,
    tenant: str,
    done: str | None = None,
    at: Page[int] = Depends(paging.by_id),
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """The tenant's keys (never their secrets), oldest first, a page at a time; a form for a new one."""
    _admin(user)
    with transaction(app_state(request).session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = keys.page_for(session, tenant=owner, page=at)
    now = datetime.now(UTC)
    context = {
        "tenant": owner.name,
        "keys": [KeyOut.model_validate(k) for k in found.items],
        "expired": {k.id for k in found.items if k.expires_at is not None and as_utc(k.expires_at) <= now},
        "done": "revoke" if done == "revoke" else None,
        "roles": ROLES,
        "following": paging.next_query(request, found, at),
    }
    return page(request, "keys.html", context)


@router.post(KEYS, response_class=HTMLResponse)
def create_key(
    request: Request,
    tenant: str,
    role: str = Form(""),
    description: str | None = Form(None),
    expires_in_days: str | None = Form(None),
    csrf: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """Create a key; its secret is on this page only (the page is not cached)."""
    check_csrf(request, user, csrf)
    _admin(user)
    if role not in ROLES:
        raise InvalidRequest(f"role: choose {' or '.join(ROLES)}")
    label = (description or "").strip() or None
    if label is not None and len(label) > 200:
        raise InvalidRequest("the description may have at most 200 characters")
    days = _days(expires_in_days)
    expires_at = datetime.now(UTC) + timedelta(days=days) if days is not None else None
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        key, secret = keys.issue(
            session,
            ctx=user.ctx,
            settings=state.settings,
            tenant=owner,
            role=Role(role),
            description=label,
            expires_at=expires_at,
        )
        shown = KeyOut.model_validate(key)
    return page(request, "key_created.html", {"tenant": owner.name, "key": shown, "secret": secret})


@router.post(KEYS + "/{key_id}/revoke", response_class=HTMLResponse)
def revoke_key(
    request: Request,
    tenant: str,
    key_id: KeyId,
    csrf: str | None = Form(None),
    confirmed: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> Response:
    """Revoke a key, after confirmation; requests with it get 401 from then on."""
    check_csrf(request, user, csrf)
    _admin(user)
    state = app_state(request)
    if confirmed != "yes":
        with transaction(state.session_factory) as session:
            owner = tenants.visible(session, ctx=user.ctx, name=tenant)
            found = keys.get(session, tenant=owner, key_id=key_id)
        held_by = f" ({found.description})" if found.description else ""
        return confirm_page(
            request,
            title=f"Revoke {found.role} key {found.prefix} of {owner.name}?",
            lines=[
                f"Every request with key {found.prefix}{held_by} gets 401 from then on, on every replica.",
                "This cannot be undone; the change is audited.",
            ],
            fields={"csrf": csrf},
            back=_keys_url(request, owner.name),
        )
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        keys.revoke(session, ctx=user.ctx, tenant=owner, key_id=key_id)
    return RedirectResponse(_keys_url(request, owner.name) + "?done=revoke", status_code=303)
