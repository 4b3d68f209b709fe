"""`control-plane` command line: database migrations, Triton, and the API server."""

from __future__ import annotations

import gc
import logging

import typer
import uvicorn

from control_plane.client.cli import register as register_client_commands
from control_plane.db import migrate
from control_plane.settings import get_settings
from control_plane.tritonserver.cli import app as triton_app

app = typer.Typer(help="Control plane for NVIDIA Triton Inference Server.", no_args_is_help=True)
db_app = typer.Typer(help="Registry database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(triton_app, name="triton", help="Run the bundled Triton Inference Server.")
register_client_commands(app)  # login, tenants, keys, models, versions, aliases, ... on the SDK


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Upgrade the registry database (CP_DATABASE_URL) to a revision."""
    migrate.upgrade(get_settings().database_url, revision)


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument(...)) -> None:
    """Downgrade the registry database to a revision ('base' drops everything)."""
    migrate.downgrade(get_settings().database_url, revision)


@db_app.command("check")
def db_check() -> None:
    """Fail when the models and the migrations have drifted apart."""
    migrate.check(get_settings().database_url)


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="Bind address (default CP_HTTP_HOST)."),
    port: int | None = typer.Option(None, help="HTTP port (default CP_HTTP_PORT)."),
) -> None:
    """Serve the API (and the embedded Triton when CP_TRITON_EMBEDDED is set) until SIGINT/SIGTERM."""
    from control_plane.app import create_app
    from control_plane.dataplane.fastpath import fast_path_protocol

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    # Everything imported so far lives as long as the process: keep it out of the cyclic GC's full
    # collections, which otherwise pause the event loop for ~0.1 s every few seconds under load.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        app,
        host=host or settings.http_host,
        port=port or settings.http_port,
        loop="uvloop",
        http=fast_path_protocol(app),  # httptools, with the inference hot path outside ASGI
        access_log=False,
        timeout_keep_alive=settings.http_keep_alive_s,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    app()
