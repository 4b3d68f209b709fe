"""Read-only console pages: tenants, models, versions, aliases (history, traffic, shadow comparison).

Each page calls the same service functions as the REST endpoints, with the signed-in caller's context,
so a publisher sees only its tenant (other tenants are 404, as in the API).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from starlette.responses import HTMLResponse, RedirectResponse

from control_plane import paging
from control_plane.console.auth import ConsoleUser, app_state, console_path, current_user
from control_plane.console.render import page
from control_plane.db.session import transaction
from control_plane.lifecycle import service as lifecycle
from control_plane.lifecycle import traffic
from control_plane.paging import Page
from control_plane.registry import service as models
from control_plane.registry import versions
from control_plane.registry.schemas import MAX_VERSION, VersionOut
from control_plane.tenants import service as tenants

router = APIRouter()
Number = Annotated[int, Path(ge=1, le=MAX_VERSION)]


MOVABLE = ("registered", "loading", "ready", "unloaded")  # an alias may point at these (loaded first)


def measured_memory(version: VersionOut) -> int | None:
    """The version's measured memory in bytes once the API reports one (None: not measured yet)."""
    value = getattr(version, "memory_bytes", None)
    return value if isinstance(value, int) else None


@router.get("/", include_in_schema=False)
def home(request: Request, user: ConsoleUser = Depends(current_user)) -> RedirectResponse:
    """The console starts at the tenants page."""
    return RedirectResponse(console_path(request) + "/tenants", status_code=303)


@router.get("/tenants", response_class=HTMLResponse)
def tenants_page(
    request: Request, at: Page[str] = Depends(paging.by_name), user: ConsoleUser = Depends(current_user)
) -> HTMLResponse:
    """The tenants the caller may see (admins: all; publishers: their own), a page at a time."""
    with transaction(app_state(request).session_factory) as session:
        visible = tenants.page_visible(session, ctx=user.ctx, page=at)
        names = models.names_by_tenant(session, tenants=visible.items)
    rows = [(t, names[t.id]) for t in visible.items]
    context = {
        "rows": rows,
        "following": paging.next_query(request, visible, at),
        "deleted": request.query_params.get("deleted"),  # a tenant just deleted (the console's redirect)
    }
    return page(request, "tenants.html", context)


@router.get("/tenants/{tenant}", response_class=HTMLResponse)
def tenant_page(
    request: Request,
    tenant: str,
    at: Page[str] = Depends(paging.by_name),
    user: ConsoleUser = Depends(current_user),
) -> HTMLResponse:
    """One tenant's models with their versions and aliases, a page at a time."""
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.page_for(session, tenant=owner, settings=state.settings, page=at)
        holding = tenants.describe(session, owner, settings=state.settings)
    context = {
        "tenant": owner.name,
        "holding": holding,
        "models": found.items,
        "following": paging.next_query(request, found, at),
    }
    return page(request, "tenant.html", context)


@router.get("/tenants/{tenant}/models/{model}", response_class=HTMLResponse)
def model_page(
    request: Request, tenant: str, model: str, user: ConsoleUser = Depends(current_user)
) -> HTMLResponse:
    """A model: settings, versions, aliases with their traffic, and the promote form."""
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        detail = models.describe(session, model=found, settings=state.settings)
        listed = versions.list_for(session, model=found)
        routes = {
            alias: traffic.get_traffic(session, state=state, tenant=owner, model=found, alias_name=alias)
            for alias in detail.aliases
        }
    context: dict[str, Any] = {
        "tenant": owner.name,
        "model": detail,
        "versions": [(v, measured_memory(v)) for v in reversed(listed)],
        "movable": [v.version for v in reversed(listed) if v.state in MOVABLE],
        "traffic": routes,
        "deleted": request.query_params.get("deleted"),  # an alias just deleted (the console's redirect)
    }
    return page(request, "model.html", context)


@router.get("/tenants/{tenant}/models/{model}/versions/{number}", response_class=HTMLResponse)
def version_page(
    request: Request, tenant: str, model: str, number: Number, user: ConsoleUser = Depends(current_user)
) -> HTMLResponse:
    """One version: state and Triton's message, sha256, size, measured memory, signature, config.pbtxt."""
    with transaction(app_state(request).session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        detail = versions.describe(
            versions.get_version(session, model=found, number=number),
            model=found.name,
            internal=user.is_admin,
        )
    context = {"tenant": owner.name, "model": found.name, "v": detail, "memory": measured_memory(detail)}
    return page(request, "version.html", context)


def _alias_context(
    request: Request, user: ConsoleUser, tenant: str, model: str, alias: str
) -> dict[str, Any]:
    state = app_state(request)
    with transaction(state.session_factory) as session:
        owner = tenants.visible(session, ctx=user.ctx, name=tenant)
        found = models.get_model(session, tenant=owner, name=model)
        history = lifecycle.history(session, model=found, alias_name=alias).items
        current = traffic.get_traffic(session, state=state, tenant=owner, model=found, alias_name=alias)
        listed = versions.list_for(session, model=found)
    return {
        "tenant": owner.name,
        "model": found.name,
        "alias": alias,
        "history": history,
        "traffic": current,
        "versions": [v.version for v in listed if v.state in MOVABLE],
        "done": request.query_params.get("done"),
    }


@router.get("/tenants/{tenant}/models/{model}/aliases/{alias}", response_class=HTMLResponse)
def alias_page(
    request: Request, tenant: str, model: str, alias: str, user: ConsoleUser = Depends(current_user)
) -> HTMLResponse:
    """An alias: its version, canary routes, shadow and comparison, history; rollback and traffic forms."""
    return page(request, "alias.html", _alias_context(request, user, tenant, model, alias))


@router.get("/tenants/{tenant}/models/{model}/aliases/{alias}/shadow", response_class=HTMLResponse)
def shadow_fragment(
    request: Request, tenant: str, model: str, alias: str, user: ConsoleUser = Depends(current_user)
) -> HTMLResponse:
    """The shadow comparison table alone (polled by the alias page)."""
    return page(request, "_shadow.html", _alias_context(request, user, tenant, model, alias))
