"""Jinja2 templates of the console (autoescaped) and the filters they use."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
SECURITY_HEADERS = {
    # Everything the console loads is its own: no inline script, no other origin, no framing.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def size(value: int | None) -> str:
    """Bytes in binary units (`1.5 MiB`); `unknown` for None."""
    if value is None:
        return "unknown"
    amount = float(value)
    for unit in UNITS:
        if amount < 1024 or unit == UNITS[-1]:
            return f"{value} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def when(value: datetime | None) -> str:
    """A timestamp to the second, in UTC."""
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def millis(seconds: float | None) -> str:
    """Seconds as milliseconds (`1.25 ms`); an em dash for None."""
    return "—" if seconds is None else f"{seconds * 1000:.2f} ms"


def percent(share: float | None) -> str:
    """A share as a percentage; an em dash for None."""
    return "—" if share is None else f"{share * 100:.1f} %"


templates.env.filters.update(size=size, when=when, millis=millis, percent=percent)


def page(request: Request, name: str, context: dict[str, Any], *, status_code: int = 200) -> HTMLResponse:
    """Render a template with the signed-in user (if any) and the console's security headers."""
    base = str(request.scope.get("root_path", "")).rstrip("/")
    context = {
        "user": getattr(request.state, "console_user", None),
        "base": base,
        "static": base.rsplit("/", 1)[0] + "/static",
        **context,
    }
    response = templates.TemplateResponse(request, name, context, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
