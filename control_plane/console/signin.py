"""Sign in with an API key (typed into a form, never in a URL), sign out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from control_plane.console.auth import (
    ConsoleUser,
    app_state,
    check_csrf,
    check_key,
    clear_session_cookie,
    codec,
    console_path,
    current_user,
    same_origin,
    set_session_cookie,
)
from control_plane.console.render import page
from control_plane.errors import AppError

router = APIRouter()


def _next_path(request: Request, wanted: str | None) -> str:
    """Where to go after signing in: a console path that was asked for, else the tenants page."""
    base = console_path(request)
    if wanted and wanted.startswith(base + "/") and not wanted.startswith("//") and "\\" not in wanted:
        return wanted
    return base + "/tenants"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    """The sign-in form."""
    return page(request, "login.html", {"next": next or "", "error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, key: str = Form(""), next: str | None = Form(None)) -> Response:
    """Check the key (consumer keys are refused) and start a session in an encrypted cookie."""
    same_origin(request)
    try:
        await run_in_threadpool(check_key, app_state(request), key.strip())
    except AppError as exc:
        context = {"next": next or "", "error": exc.message}
        return page(request, "login.html", context, status_code=exc.status_code)
    response = RedirectResponse(_next_path(request, next), status_code=303)
    set_session_cookie(request, response, codec(request).new_session(key.strip()))
    return response


@router.post("/logout")
def logout(
    request: Request, csrf: str | None = Form(None), user: ConsoleUser = Depends(current_user)
) -> Response:
    """End the session."""
    check_csrf(request, user, csrf)
    response = RedirectResponse(console_path(request) + "/login", status_code=303)
    clear_session_cookie(request, response)
    return response
