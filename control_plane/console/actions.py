"""Console actions: promote, roll back, canary weights and shadow, delete an alias, delete a tenant (admins),
each confirmed first.

A form first posts without `confirmed`: the console answers a page saying what will change, whose
"Confirm" button posts the same fields again with `confirmed=yes`. The change itself is the same
service call as the REST endpoint's (same checks, same audit entry), then the browser is redirected to
the alias page (post/redirect/get).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.responses import HTMLResponse, RedirectResponse, Response

from control_plane.console.auth import ConsoleUser, app_state, check_csrf, console_path, current_user
from control_plane.console.render import page
from control_plane.db.session import transaction
from control_plane.dependencies import waiting_for_loads
from control_plane.errors import Forbidden, InvalidRequest
from control_plane.lifecycle import service as lifecycle
from control_plane.lifecycle import traffic
from control_plane.lifecycle.schemas import HistoryEntry, Route, Shadow, Traffic, TrafficOut
from control_plane.registry import service as models
from control_plane.tenants import service as tenants

router = APIRouter()
MODEL = "/tenants/{tenant}/models/{model}"
ALIAS = MODEL + "/aliases/{alias}"
WHOLE = re.compile(r"[0-9]{1,10}")  # ASCII digits only: "²" is a digit to str.isdigit, not to int()


def _number(value: str | None, what: str) -> int:
    """A whole number typed in a form (from 1), or 422 in the user's terms."""
    if value is None or not value.strip():
        raise InvalidRequest(f"choose a {what}")
    if not WHOLE.fullmatch(value.strip()) or not 0 < int(value) < 2**31:
        raise InvalidRequest(f"{what} must be a whole number from 1, not {value!r}")
    return int(value)


def _optional_number(value: str | None, what: str) -> int | None:
    """Like `_number`, None when left blank."""
    return None if value is None or not value.strip() else _number(value, what)


def _reason(value: str | None) -> str | None:
    reason = (value or "").strip()
    if len(reason) > 500:
        raise InvalidRequest("the reason may have at most 500 characters")
    return reason or None


def confirm_page(
    request: Request, *, title: str, lines: list[str], fields: dict[str, Any], back: str | None = None
) -> HTMLResponse:
    """The confirmation page: what will change, and the same form with confirmed=yes; Cancel goes `back`
    (by default, one step up the path)."""
    hidden = {k: "" if v is None else str(v) for k, v in fields.items()}
    if back is None:
        back = request.url.path.rsplit("/", 1)[0]  # .../promote -> the model, .../rollback -> the alias
    context = {"title": title, "lines": lines, "fields": hidden, "back": back}
    return page(request, "confirm.html", context)


def _done(request: Request, tenant: str, model: str, alias: str, action: str) -> RedirectResponse:
    url = f"{console_path(request)}/tenants/{quote(tenant)}/models/{quote(model)}/aliases/{quote(alias)}"
    return RedirectResponse(f"{url}?done={action}", status_code=303)


@dataclass(frozen=True)
class _Form:
    """What every action's form gives besides its own fields."""

    request: Request
    user: ConsoleUser
    tenant: str
    model: str
    confirmed: str | None
    csrf: str | None


@router.post(MODEL + "/promote", response_class=HTMLResponse)
async def promote(
    request: Request,
    tenant: str,
    model: str,
    alias: str = Form(""),
    version: str = Form(""),
    reason: str | None = Form(None),
    csrf: str | None = Form(None),
    confirmed: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> Response:
    """Point an alias (new or existing) at a version, after confirmation (the promote may wait for the
    version's load: on the threads of such waits)."""
    check_csrf(request, user, csrf)
    form = _Form(request, user, tenant, model, confirmed=confirmed, csrf=csrf)
    work = functools.partial(_promote, form, alias=alias, version=version, reason=reason)
    return await waiting_for_loads(app_state(request), work)


def _promote(form: _Form, *, alias: str, version: str, reason: str | None) -> Response:
    request, user, tenant, model = form.request, form.user, form.tenant, form.model
    confirmed, csrf = form.confirmed, form.csrf
    alias = alias.strip()
    if not alias:
        raise InvalidRequest("name the alias to move")
    number, why = _number(version, "version"), _reason(reason)
    state = app_state(request)
    if confirmed != "yes":
        with transaction(state.session_factory) as session:
            owner = tenants.visible(session, ctx=user.ctx, name=tenant)
            found = models.get_model(session, tenant=owner, name=model)
            current = models.describe(session, model=found, settings=state.settings).aliases.get(alias)
        was = f"v{current}" if current is not None else "nothing (a new alias)"
        return confirm_page(
            request,
            title=f"Promote {owner.name}/{found.name} v{number} to '{alias}'?",
            lines=[
                f"'{alias}' now points at {was}; it will point at v{number}.",
                "The version is loaded first if needed; the change is audited.",
            ],
            fields={"alias": alias, "version": number, "reason": why, "csrf": csrf},
        )
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        lifecycle.promote(
            session,
            ctx=user.ctx,
            state=state,
            tenant=owner,
            model=found,
            alias_name=alias,
            number=number,
            reason=why,
        )
    return _done(request, owner.name, found.name, alias, "promote")


def _previous_of(history: list[HistoryEntry], current: int) -> int | None:
    """The version a plain rollback goes back to (what the alias had before its current version)."""
    return next(
        (h.from_version for h in history if h.to_version == current and h.from_version is not None), None
    )


@router.post(ALIAS + "/rollback", response_class=HTMLResponse)
async def rollback(
    request: Request,
    tenant: str,
    model: str,
    alias: str,
    to_version: str | None = Form(None),
    reason: str | None = Form(None),
    csrf: str | None = Form(None),
    confirmed: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> Response:
    """Move an alias back to its previous version (or a chosen one), after confirmation (on the threads of
    calls that wait for loads, as a promote)."""
    check_csrf(request, user, csrf)
    form = _Form(request, user, tenant, model, confirmed=confirmed, csrf=csrf)
    work = functools.partial(_rollback, form, alias=alias, to_version=to_version, reason=reason)
    return await waiting_for_loads(app_state(request), work)


def _rollback(form: _Form, *, alias: str, to_version: str | None, reason: str | None) -> Response:
    request, user, tenant, model = form.request, form.user, form.tenant, form.model
    confirmed, csrf = form.confirmed, form.csrf
    target, why = _optional_number(to_version, "version"), _reason(reason)
    state = app_state(request)
    if confirmed != "yes":
        with transaction(state.session_factory) as session:
            owner = tenants.visible(session, ctx=user.ctx, name=tenant)
            found = models.get_model(session, tenant=owner, name=model)
            current = traffic.get_traffic(session, state=state, tenant=owner, model=found, alias_name=alias)
            history = lifecycle.history(session, model=found, alias_name=alias).items
        back = target if target is not None else _previous_of(history, current.version)
        goes = f"v{back}" if back is not None else "its previous version (none is recorded: this will fail)"
        return confirm_page(
            request,
            title=f"Roll back '{alias}' of {owner.name}/{found.name}?",
            lines=[
                f"'{alias}' now points at v{current.version}; it will point at {goes}.",
                "A canary split on the alias is cleared; the change is audited.",
            ],
            fields={"to_version": target, "reason": why, "csrf": csrf},
        )
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        lifecycle.rollback(
            session,
            ctx=user.ctx,
            state=state,
            tenant=owner,
            model=found,
            alias_name=alias,
            to_version=target,
            reason=why,
        )
    return _done(request, owner.name, found.name, alias, "rollback")


@router.post(ALIAS + "/delete", response_class=HTMLResponse)
def delete_alias(
    request: Request,
    tenant: str,
    model: str,
    alias: str,
    csrf: str | None = Form(None),
    confirmed: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> Response:
    """Remove an alias with its canary split, shadow and history, after confirmation; then the model."""
    check_csrf(request, user, csrf)
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        if confirmed != "yes":
            current = traffic.get_traffic(session, state=state, tenant=owner, model=found, alias_name=alias)
            return confirm_page(
                request,
                title=f"Delete '{alias}' of {owner.name}/{found.name}?",
                lines=[
                    f"'{alias}' points at v{current.version} ({_describe(current.routes, current.shadow)}).",
                    f"Requests naming '{alias}' will get 404; its history goes with it; this is audited.",
                ],
                fields={"csrf": csrf},
            )
        traffic.delete_alias(session, ctx=user.ctx, state=state, tenant=owner, model=found, alias_name=alias)
    url = f"{console_path(request)}/tenants/{quote(owner.name)}/models/{quote(found.name)}"
    return RedirectResponse(f"{url}?deleted={quote(alias)}", status_code=303)


@router.post("/tenants/{tenant}/delete", response_class=HTMLResponse)
def delete_tenant(
    request: Request,
    tenant: str,
    csrf: str | None = Form(None),
    confirmed: str | None = Form(None),
    user: ConsoleUser = Depends(current_user),
) -> Response:
    """Offboard a tenant (admins), after confirmation; then the tenants page."""
    check_csrf(request, user, csrf)
    if not user.is_admin:
        raise Forbidden("admin role required")
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        if confirmed != "yes":
            usage = tenants.describe(session, owner, settings=state.settings).usage
            return confirm_page(
                request,
                title=f"Delete tenant {owner.name}?",
                lines=[
                    f"Its {usage.models} model(s) are deleted and unloaded, and its {usage.keys} live key(s) "
                    "revoked: its requests get 401 from now on.",
                    "This cannot be undone, and the name is not given to another tenant; the audit trail "
                    "keeps what it held.",
                ],
                fields={"csrf": csrf},
            )
        tenants.delete(session, ctx=user.ctx, state=state, tenant=owner)
    return RedirectResponse(f"{console_path(request)}/tenants?deleted={quote(owner.name)}", status_code=303)


def _traffic_from(form: FormData) -> Traffic:
    """The Traffic body from the form: `weight_<n>` per version (blank or 0: no route), shadow fields."""
    routes = []
    for name, value in form.multi_items():
        if name.startswith("weight_") and isinstance(value, str) and value.strip() not in ("", "0"):
            number = _number(name.removeprefix("weight_"), "version")
            weight = _number(value, f"weight of v{number}")
            routes.append({"version": number, "weight": weight})
    shadow_version = _optional_number(_text(form, "shadow_version"), "shadow version")
    shadow = None
    if shadow_version is not None:
        shadow = {
            "version": shadow_version,
            "percent": _number(_text(form, "shadow_percent"), "shadow percent"),
        }
    try:
        return Traffic.model_validate({"routes": routes, "shadow": shadow})
    except ValidationError as exc:
        raise InvalidRequest(
            "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        ) from None


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _describe(routes: list[Route], shadow: Shadow | None) -> str:
    split = ", ".join(f"v{r.version} {r.weight} %" for r in routes) or "no canary split"
    mirror = f"shadow v{shadow.version} at {shadow.percent} %" if shadow else "no shadow"
    return f"{split}; {mirror}"


@router.post(ALIAS + "/traffic", response_class=HTMLResponse)
async def set_traffic(
    request: Request, tenant: str, model: str, alias: str, user: ConsoleUser = Depends(current_user)
) -> Response:
    """Set canary weights and the shadow of an alias, after confirmation."""
    form = await request.form(max_files=0, max_fields=64)
    check_csrf(request, user, _text(form, "csrf"))
    body = _traffic_from(form)
    if form.get("confirmed") != "yes":
        current: TrafficOut = await run_in_threadpool(_current_traffic, request, user, tenant, model, alias)
        fields = {k: v for k, v in form.multi_items() if isinstance(v, str) and k != "confirmed"}
        return confirm_page(
            request,
            title=f"Change the traffic of '{alias}' of {tenant}/{model}?",
            lines=[
                f"Now: {_describe(current.routes, current.shadow)}.",
                f"After: {_describe(body.routes, body.shadow)}.",
                "Every version named is loaded first if needed; the change is audited.",
            ],
            fields=fields,
        )
    apply = functools.partial(_apply_traffic, request, user, tenant, model, alias, body)
    await waiting_for_loads(app_state(request), apply)  # it loads every version named first
    return _done(request, tenant, model, alias, "traffic")


def _current_traffic(request: Request, user: ConsoleUser, tenant: str, model: str, alias: str) -> TrafficOut:
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        return traffic.get_traffic(session, state=state, tenant=owner, model=found, alias_name=alias)


def _apply_traffic(
    request: Request, user: ConsoleUser, tenant: str, model: str, alias: str, body: Traffic
) -> None:
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        traffic.set_traffic(
            session, ctx=user.ctx, state=state, tenant=owner, model=found, alias_name=alias, body=body
        )
