"""CLI output: rich tables (stdout), `-o json`, and failures as one clear line with an exit code."""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from control_plane.client import errors

P = ParamSpec("P")
R = TypeVar("R")

# Exit codes: 1 the request failed, 2 usage or configuration, 3 key refused (401/403),
# 4 a version failed to load, 5 a wait timed out, 6 the control plane could not be reached.
EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_LOAD_FAILED, EXIT_TIMEOUT, EXIT_UNREACHABLE = 1, 2, 3, 4, 5, 6


class Format(enum.StrEnum):
    """Output formats."""

    table = "table"
    json = "json"


OutputOption = typer.Option(Format.table, "--output", "-o", help="table, or json for scripts.")


def stdout() -> Console:
    """Tables on stdout; wide enough not to wrap when piped."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def stderr() -> Console:
    """Progress, spinners and errors on stderr (stdout stays parseable)."""
    return Console(stderr=True)


def to_json(value: Any) -> Any:
    """Models and lists of them as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def print_json(value: Any) -> None:
    """JSON on stdout."""
    typer.echo(json.dumps(to_json(value), indent=2))


def cell(value: Any) -> str:
    """A table cell: timestamps to the second, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> None:
    """A table on stdout."""
    out = Table(*columns, title=title, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        out.add_row(*(escape(cell(v)) for v in row))
    stdout().print(out)


def emit(value: Any, output: Format, render: Callable[[], None]) -> None:
    """JSON for `-o json`, else the table `render` prints."""
    if output == Format.json:
        print_json(value)
    else:
        render()


def fail(message: str, code: int = EXIT_FAILED) -> typer.Exit:
    """Print `error: message` on stderr; the Exit to raise."""
    stderr().print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _explain(exc: errors.ControlPlaneError) -> tuple[str, int]:
    if isinstance(exc, errors.Unauthorized):
        hint = "log in again with `control-plane login` or set CP_KEY"
        return f"the control plane refused the key ({exc.detail}): {hint}", EXIT_AUTH
    if isinstance(exc, errors.Forbidden):
        return f"this key may not do that ({exc.detail})", EXIT_AUTH
    if isinstance(exc, errors.ApiError):
        retry = f" (retry after {exc.retry_after:g} s)" if exc.retry_after is not None else ""
        return f"{exc.detail} [{exc.status_code} {exc.kind}]{retry}", EXIT_FAILED
    if isinstance(exc, errors.LoadFailed):
        return exc.message, EXIT_LOAD_FAILED
    if isinstance(exc, errors.WaitTimeout):
        return exc.message, EXIT_TIMEOUT
    if isinstance(exc, errors.ConnectionFailed):
        return exc.message, EXIT_UNREACHABLE
    return exc.message, EXIT_FAILED


def handled(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn the SDK's exceptions (and unreadable local files) into a message and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except errors.ControlPlaneError as exc:
            message, code = _explain(exc)
            raise fail(message, code) from None
        except (OSError, ValueError) as exc:
            raise fail(str(exc), EXIT_USAGE) from None

    return wrapper
