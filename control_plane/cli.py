"""`control-plane` command line: database migrations, Triton, and the API server."""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import typer
import uvicorn
from alembic.util.exc import CommandError
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.config import STARTUP_FAILURE

from control_plane.client.cli import register as register_client_commands
from control_plane.db import migrate
from control_plane.listeners import ListenError, addresses, announce, listening_sockets
from control_plane.settings import Settings, get_settings
from control_plane.tritonserver.cli import app as triton_app

log = logging.getLogger("control_plane.serve")

app = typer.Typer(help="Control plane for NVIDIA Triton Inference Server.", no_args_is_help=True)
db_app = typer.Typer(help="Registry database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(triton_app, name="triton", help="Run the bundled Triton Inference Server.")
register_client_commands(app)  # login, tenants, keys, models, versions, aliases, ... on the SDK


def _settings() -> Settings:
    """The process's settings, or exit 2 naming each bad CP_* variable (no traceback)."""
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = "_".join(str(part) for part in error["loc"])
            given = (
                f" (got {error['input']!r})"
                if "input" in error and not isinstance(error["input"], dict) and not _is_secret(field)
                else ""
            )
            typer.echo(f"control-plane: CP_{field.upper()}: {error['msg']}{given}", err=True)
        raise typer.Exit(2) from None


def _is_secret(field: str) -> bool:
    """Whether a setting holds a secret (a key, a token): its bad value is not echoed back."""
    info = Settings.model_fields.get(field)
    return info is not None and "SecretStr" in str(info.annotation)


@contextlib.contextmanager
def _registry_errors(command: str) -> Iterator[None]:
    """The database's own refusals (unreachable, a missing folder, not migrated) as one line, exit 1."""
    try:
        yield
    except (CommandError, SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        typer.echo(f"control-plane {command}: the registry database (CP_DATABASE_URL): {reason}", err=True)
        raise typer.Exit(1) from None


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Upgrade the registry database (CP_DATABASE_URL) to a revision."""
    with _registry_errors("db upgrade"):
        migrate.upgrade(_settings().database_url, revision)


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(...)) -> None:
    """Downgrade the registry database to a revision ('base' drops everything)."""
    with _registry_errors("db downgrade"):
        migrate.downgrade(_settings().database_url, revision)


@db_app.command("check")
def db_check() -> None:
    """Fail when the database is not at this release's latest migration, or the models and the
    migrations have drifted apart."""
    url = _settings().database_url
    with _registry_errors("db check"):
        _require_migrated(url, "db check")
        migrate.check(url)


def _require_migrated(url: str, command: str) -> None:
    """Exit 1 saying what to run when the database is behind (or ahead of) this release's migrations."""
    current, head = migrate.revisions(url)
    if current != head:
        at = "has no tables of ours yet" if current is None else f"is at migration {current}"
        typer.echo(
            f"control-plane {command}: the registry database (CP_DATABASE_URL) {at}, this release needs "
            f"{head}: run `control-plane db upgrade`",
            err=True,
        )
        raise typer.Exit(1)


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="Bind address of HTTP and gRPC (default CP_HTTP_HOST)."),
    port: int | None = typer.Option(None, help="HTTP port (default CP_HTTP_PORT)."),
    listening_file: Path | None = typer.Option(
        None,
        help="Write the API's host:port to this file once its port is held (for a script waiting on "
        "this process: from then on, what answers there is this server). Removed as the server starts "
        "and when it stops.",
    ),
) -> None:
    """Serve the API (and the embedded Triton when CP_TRITON_EMBEDDED is set) until SIGINT/SIGTERM."""
    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    http_setting = "--port" if port else "CP_HTTP_PORT"
    host, port = host or settings.http_host, port or settings.http_port
    if listening_file is not None:
        listening_file.unlink(missing_ok=True)  # a file left by an earlier server must not speak for this one
    # The ports first, before the app starts Triton (which picks free ports of its own) or anything else.
    try:
        http_sockets = listening_sockets(host, port, setting=http_setting)
        grpc_sockets = (
            listening_sockets(host, settings.grpc_port, setting="CP_GRPC_PORT") if settings.grpc_port else []
        )
    except ListenError as exc:
        typer.echo(f"control-plane serve: {exc}", err=True)
        raise typer.Exit(1) from None
    with _registry_errors("serve"):  # then the registry: one line, not the app's start-up traceback
        _require_migrated(settings.database_url, "serve")
    log.info(
        "listening on %s (HTTP)%s; serving once started",
        ", ".join(addresses(http_sockets)),
        f", {', '.join(addresses(grpc_sockets))} (gRPC)" if grpc_sockets else "",
    )
    if listening_file is not None:
        announce(listening_file, "\n".join(addresses(http_sockets)) + "\n")
        _remove_on_sigterm(listening_file)
    try:
        _serve(settings, http_sockets, grpc_sockets, host=host, port=port)
    finally:
        if listening_file is not None:
            listening_file.unlink(missing_ok=True)


def _remove_on_sigterm(path: Path) -> None:
    """Remove `path` when SIGTERM ends the process: uvicorn ends on it gracefully, then raises it again
    with this handler back in place (so the process still ends by SIGTERM, as before)."""

    def remove_then_end(signum: int, _: object) -> None:
        path.unlink(missing_ok=True)
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    signal.signal(signal.SIGTERM, remove_then_end)


def _serve(
    settings: Settings,
    http_sockets: list[socket.socket],
    grpc_sockets: list[socket.socket],
    *,
    host: str,
    port: int,
) -> None:
    """Run the app with uvicorn on the sockets bound already, until SIGINT/SIGTERM."""
    from control_plane.app import create_app
    from control_plane.dataplane.fastpath import fast_path_protocol

    app = create_app(settings, grpc_sockets=grpc_sockets)
    # Everything imported so far lives as long as the process: keep it out of the cyclic GC's full
    # collections, which otherwise pause the event loop for ~0.1 s every few seconds under load.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http=fast_path_protocol(app),  # httptools, with the inference hot path outside ASGI
        access_log=False,
        timeout_keep_alive=settings.http_keep_alive_s,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=http_sockets)
    if not server.started:
        raise typer.Exit(STARTUP_FAILURE)


if __name__ == "__main__":
    app()
