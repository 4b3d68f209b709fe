"""Console pages of API keys (admins, as in the API): a tenant's keys, and the admin keys (bound to no
tenant); list, create (the secret shown once), revoke.

They call the keys service as `/v1/tenants/{t}/keys` and `/v1/keys` do, so expiry rules (`CP_KEY_MAX_TTL_S`,
never after the creator's own key) and the audit log are the same.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Request
from sqlalchemy.orm import Session
from starlette.responses import HTMLResponse, RedirectResponse, Response

from control_plane import paging
from control_plane.auth.principal import Role
from control_plane.console.actions import WHOLE, confirm_page
from control_plane.console.auth import ConsoleUser, app_state, check_csrf, console_path, current_user
from control_plane.console.render import page
from control_plane.db.models import Tenant
from control_plane.db.session import transaction
from control_plane.errors import Forbidden, InvalidRequest
from control_plane.keys import service as keys
from control_plane.keys.schemas import KeyOut
from control_plane.paging import Page
from control_plane.tenants import service as tenants
from control_plane.timestamps import as_utc

router = APIRouter()
KEYS = "/tenants/{tenant}/keys"
ADMIN_KEYS = "/keys"
KeyId = Annotated[int, Path(ge=1, le=2**63 - 1)]
TENANT_ROLES = (Role.PUBLISHER.value, Role.CONSUMER.value)
MOST_DAYS = 36500  # 100 years, the API's bound too


def _admin(user: ConsoleUser) -> None:
    if not user.is_admin:
        raise Forbidden("only admins manage keys")


def _days(value: str | None) -> int | None:
    """Days until a new key expires, typed in the form (blank: the default), or 422 in the user's terms."""
    text = (value or "").strip()
    if not text:
        return None
    if not WHOLE.fullmatch(text) or not 1 <= int(text) <= MOST_DAYS:
        raise InvalidRequest(f"expires in: a whole number of days from 1 to {MOST_DAYS}, not {text!r}")
    return int(text)


def _owner(session: Session, user: ConsoleUser, tenant: str | None) -> Tenant | None:
    """The tenant whose keys these are (404 if unknown; its name is `tenant`, looked up exactly); None: the
    admin keys."""
    return tenants.visible(session, ctx=user.ctx, name=tenant) if tenant is not None else None


def _roles(tenant: str | None) -> tuple[str, ...]:
    """The roles a new key may have: a tenant's publisher or consumer, or admin for the admin keys."""
    return TENANT_ROLES if tenant is not None else (Role.ADMIN.value,)


def _keys_url(request: Request, tenant: str | None) -> str:
    where = f"/tenants/{quote(tenant)}/keys" if tenant is not None else ADMIN_KEYS
    return console_path(request) + where


@router.get(KEYS, response_class=HTMLResponse)
def keys_page(
    request: Request,
    tenant: str,
    done: str | None = None,
    at: Page[int] = Depends(paging.by_id),
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """The tenant's keys (never their secrets), oldest first, a page at a time; a form for a new one."""
    return _listing(request, user, tenant, done=done, at=at)


@router.get(ADMIN_KEYS, response_class=HTMLResponse)
def admin_keys_page(
    request: Request,
    done: str | None = None,
    at: Page[int] = Depends(paging.by_id),
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """The admin keys (the bootstrap `CP_ADMIN_TOKEN` is not one), as a tenant's keys are shown."""
    return _listing(request, user, None, done=done, at=at)


def _listing(
    request: Request, user: ConsoleUser, tenant: str | None, *, done: str | None, at: Page[int]
) -> HTMLResponse:
    _admin(user)
    with transaction(app_state(request).session_factory) as session:
        owner = _owner(session, user, tenant)
        found = keys.page_for(session, tenant=owner, page=at)
    now = datetime.now(UTC)
    context = {
        "tenant": tenant,
        "kbase": _keys_url(request, tenant),
        "keys": [KeyOut.model_validate(k) for k in found.items],
        "expired": {k.id for k in found.items if k.expires_at is not None and as_utc(k.expires_at) <= now},
        "done": "revoke" if done == "revoke" else None,
        "roles": _roles(tenant),
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
    """Create a key of the tenant; its secret is on this page only (the page is not cached)."""
    check_csrf(request, user, csrf)
    return _create(request, user, tenant, role=role, description=description, days=expires_in_days)


@router.post(ADMIN_KEYS, response_class=HTMLResponse)
def create_admin_key(
    request: Request,
    description: str | None = Form(None),
    expires_in_days: str | None = Form(None),
    csrf: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """Create an admin key (each operator or system its own); its secret is on this page only."""
    check_csrf(request, user, csrf)
    return _create(request, user, None, role=Role.ADMIN.value, description=description, days=expires_in_days)


def _create(
    request: Request,
    user: ConsoleUser,
    tenant: str | None,
    *,
    role: str,
    description: str | None,
    days: str | None,
) -> HTMLResponse:
    _admin(user)
    allowed = _roles(tenant)
    if role not in allowed:
        raise InvalidRequest(f"role: choose {' or '.join(allowed)}")
    label = (description or "").strip() or None
    if label is not None and len(label) > 200:
        raise InvalidRequest("the description may have at most 200 characters")
    if label is not None and not label.isprintable():
        raise InvalidRequest("the description may not hold control characters (a NUL, a newline, a tab)")
    lasting = _days(days)
    expires_at = datetime.now(UTC) + timedelta(days=lasting) if lasting is not None else None
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = _owner(session, user, tenant)
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
    context = {"tenant": tenant, "kbase": _keys_url(request, tenant), "key": shown, "secret": secret}
    return page(request, "key_created.html", context)


@router.post(KEYS + "/{key_id}/revoke", response_class=HTMLResponse)
def revoke_key(
    request: Request,
    tenant: str,
    key_id: KeyId,
    csrf: str | None = Form(None),
    confirmed: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> Response:
    """Revoke a key of the tenant, after confirmation; requests with it get 401 from then on."""
    check_csrf(request, user, csrf)
    return _revoke(request, user, tenant, key_id, csrf=csrf, confirmed=confirmed)


@router.post(ADMIN_KEYS + "/{key_id}/revoke", response_class=HTMLResponse)
def revoke_admin_key(
    request: Request,
    key_id: KeyId,
    csrf: str | None = Form(None),
    confirmed: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> Response:
    """Revoke an admin key (it may be the signed-in one), after confirmation."""
    check_csrf(request, user, csrf)
    return _revoke(request, user, None, key_id, csrf=csrf, confirmed=confirmed)


def _revoke(
    request: Request,
    user: ConsoleUser,
    tenant: str | None,
    key_id: int,
    *,
    csrf: str | None,
    confirmed: str | None,
) -> Response:
    _admin(user)
    state = app_state(request)
    if confirmed != "yes":
        with transaction(state.session_factory) as session:
            found = keys.get(session, tenant=_owner(session, user, tenant), key_id=key_id)
        held_by = f" ({found.description})" if found.description else ""
        whose = f" of {tenant}" if tenant is not None else ""
        return confirm_page(
            request,
            title=f"Revoke {found.role} key {found.prefix}{whose}?",
            lines=[
                f"Every request with key {found.prefix}{held_by} gets 401 from then on, on every replica.",
                "This cannot be undone; the change is audited.",
            ],
            fields={"csrf": csrf},
            back=_keys_url(request, tenant),
        )
    with transaction(state.session_factory) as session:
        keys.revoke(session, ctx=user.ctx, tenant=_owner(session, user, tenant), key_id=key_id)
    return RedirectResponse(_keys_url(request, tenant) + "?done=revoke", status_code=303)
