"""The web console at /console (server-rendered pages, htmx) and the offline /docs and /redoc.

Everything the browser loads comes from the app: templates in `templates/`, a small stylesheet and the
vendored htmx, Swagger UI and ReDoc in `static/` (see `static/vendor/README.md`). No build step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from control_plane.console import actions, admin, browse, keys, signin
from control_plane.console.auth import SignInRequired, clear_session_cookie, console_path
from control_plane.console.cookies import SessionCodec, cookie_secret
from control_plane.console.docs import STATIC, install_docs
from control_plane.console.render import page
from control_plane.errors import AppError
from control_plane.settings import Settings

CONSOLE = "/console"
STATIC_DIR = Path(__file__).parent / "static"

log = logging.getLogger(__name__)


def create_console(parent: FastAPI, settings: Settings) -> FastAPI:
    """The console as its own ASGI app (its routes are not API routes, and not in the OpenAPI)."""
    console = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    console.state.control_plane = parent
    console.state.codec = SessionCodec(cookie_secret(settings), max_age_s=settings.console_session_s)
    console.state.live = None
    for router in (signin.router, browse.router, actions.router, admin.router, keys.router):
        console.include_router(router)
    console.add_exception_handler(AppError, _app_error)
    console.add_exception_handler(RequestValidationError, _invalid)
    console.add_exception_handler(HTTPException, _http_error)
    console.add_exception_handler(DataError, _unstorable)
    return console


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the console at /console, the static assets at /static, and the offline /docs and /redoc."""
    install_docs(app)
    app.mount(STATIC, StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(CONSOLE, create_console(app, settings), name="console")


def _is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def _app_error(request: Request, exc: Exception) -> Response:
    """Sign-in needed: to the sign-in page (htmx: by HX-Redirect); any other error: an error page."""
    assert isinstance(exc, AppError)
    if isinstance(exc, SignInRequired):
        login = console_path(request) + "/login"
        target = request.url.path if request.method == "GET" and not _is_htmx(request) else ""
        url = f"{login}?{urlencode({'next': target})}" if target else login
        response: Response = (
            HTMLResponse("", headers={"HX-Redirect": url})
            if _is_htmx(request)
            else RedirectResponse(url, status_code=303)
        )
        clear_session_cookie(request, response)
        return response
    context = {"status": exc.status_code, "kind": exc.kind, "message": exc.message}
    return page(request, "error.html", context, status_code=exc.status_code)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
    context = {"status": 422, "kind": "InvalidRequest", "message": problems or "invalid request"}
    return page(request, "error.html", context, status_code=422)


async def _unstorable(request: Request, exc: Exception) -> Response:
    """A value the database refuses that no check caught (as the API's handler): the form's fault, a 422."""
    log.warning("the database refused a value of a console form: %s", str(exc).splitlines()[0][:300])
    message = "a value in the form cannot be stored (a NUL character or a number out of range)"
    return page(
        request, "error.html", {"status": 422, "kind": "InvalidRequest", "message": message}, status_code=422
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    missing = exc.status_code == 404
    context = {
        "status": exc.status_code,
        "kind": "NotFound" if missing else "Error",
        "message": "no such page" if missing else str(exc.detail),
    }
    return page(request, "error.html", context, status_code=exc.status_code)
