"""/docs (Swagger UI) and /redoc from the bundled assets: they work without internet access.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google); the app is
created with those turned off and these are registered instead, with the same paths.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from starlette.responses import HTMLResponse

STATIC = "/static"
VENDOR = STATIC + "/vendor"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"
# Nothing of another origin may load: ReDoc's bundle would fetch its footer logo from Redocly's CDN (its
# image then hides itself), and Swagger UI any image a description links to. Both need inline scripts
# and styles (their start-up code, styled-components) and ReDoc a blob: worker for its search.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SWAGGER_PARAMETERS = {
    # Swagger UI would otherwise send the document to an online validator for its badge.
    "validatorUrl": None,
    "persistAuthorization": False,
}


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /docs/oauth2-redirect and /redoc with assets under /static (see console.install)."""
    assert app.docs_url is None and app.redoc_url is None, "create the app with docs_url=redoc_url=None"
    openapi_path = app.openapi_url or "/openapi.json"

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return _local_only(
            get_swagger_ui_html(
                openapi_url=base + openapi_path,
                title=f"{app.title} - Swagger UI",
                swagger_js_url=f"{base}{VENDOR}/swagger-ui/swagger-ui-bundle.js",
                swagger_css_url=f"{base}{VENDOR}/swagger-ui/swagger-ui.css",
                swagger_favicon_url=f"{base}{VENDOR}/swagger-ui/favicon-32x32.png",
                oauth2_redirect_url=base + OAUTH2_REDIRECT,
                swagger_ui_parameters=SWAGGER_PARAMETERS,
            )
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return _local_only(
            get_redoc_html(
                openapi_url=base + openapi_path,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{base}{VENDOR}/redoc/redoc.standalone.js",
                redoc_favicon_url=f"{base}{VENDOR}/swagger-ui/favicon-32x32.png",
                with_google_fonts=False,
            )
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def _local_only(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = DOCS_CSP
    return response
