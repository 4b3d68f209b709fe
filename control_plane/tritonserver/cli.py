"""`control-plane triton serve`: run the bundled Triton in the foreground until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

import typer

from control_plane.settings import get_settings
from control_plane.tritonserver.process import TritonProcess

app = typer.Typer(help="Run the bundled Triton Inference Server.", no_args_is_help=True)


@app.callback()
def triton() -> None:
    """Run the bundled Triton Inference Server."""


def _s3_env() -> dict[str, str]:
    settings = get_settings()
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_key.get_secret_value(),
        "AWS_DEFAULT_REGION": settings.s3_region,
    }


@app.command("serve")
def serve(
    repository: str | None = typer.Option(None, help="Folder or s3://http://host:port/bucket/prefix."),
    http_port: int = typer.Option(8000, help="Triton HTTP port."),
    grpc_port: int = typer.Option(8001, help="Triton gRPC port."),
    metrics_port: int = typer.Option(8002, help="Triton metrics port."),
    address: str = typer.Option("127.0.0.1", help="Address Triton binds to."),
    workdir: Path | None = typer.Option(None, help="Backends and log directory (default CP_TRITON_WORKDIR)."),
    startup_timeout: float = typer.Option(120.0, help="Seconds to wait for Triton to be ready."),
) -> None:
    """Start Triton (explicit model control) and keep it running until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    repo = repository or settings.model_repository
    if "://" not in repo:
        Path(repo).mkdir(parents=True, exist_ok=True)
    process = TritonProcess(
        repository=repo,
        workdir=workdir or settings.triton_workdir,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        address=address,
        env=_s3_env() if repo.startswith("s3://") else None,
    )
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _on_signal)
    try:
        process.start(timeout_s=startup_timeout)
        typer.echo(f"Triton ready: HTTP {process.http_url}, gRPC {process.grpc_url} (pid {process.pid})")
        typer.echo(f"log: {process.log_path}")
        while not stopping.wait(0.5):
            if not process.is_running():
                typer.echo(f"Triton exited unexpectedly; see {process.log_path}", err=True)
                raise typer.Exit(1)
    finally:
        process.stop()
    typer.echo("Triton stopped")
