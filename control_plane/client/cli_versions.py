"""CLI verbs for versions: upload with a progress bar, wait with a spinner, inspect."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from control_plane.client.api import ControlPlane
from control_plane.client.output import Format, OutputOption, emit, handled, stderr, stdout, table
from control_plane.client.session import TenantOption, connect, tenant_for
from control_plane.client.types import Version

versions_app = typer.Typer(
    help="Versions of a model: upload, wait until loaded, inspect.", no_args_is_help=True
)


def _show_versions(versions: list[Version]) -> None:
    table(
        ["VERSION", "STATE", "SIZE", "SHA256", "CREATED", "MESSAGE"],
        [(v.version, v.state, v.size_bytes, v.sha256[:12], v.created_at, v.state_message) for v in versions],
    )


@versions_app.command("list")
@handled
def versions_list(model: str, tenant: str | None = TenantOption, output: Format = OutputOption) -> None:
    """The model's versions."""
    cp = connect()
    found = cp.versions.list(tenant_for(cp, tenant), model)
    emit(found, output, lambda: _show_versions(found))


@versions_app.command("get")
@handled
def versions_get(
    model: str,
    number: int,
    config: bool = typer.Option(False, "--config", help="Also print the generated config.pbtxt."),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """One version: state and Triton's message, size, sha256, signature, config."""
    cp = connect()
    found = cp.versions.get(tenant_for(cp, tenant), model, number)

    def render() -> None:
        _show_versions([found])
        if config and found.config:
            stdout().print(found.config, markup=False, highlight=False)

    emit(found, output, render)


def _wait(cp: ControlPlane, tenant: str, model: str, number: int, timeout: float) -> Version:
    with stderr().status(f"version {number}: waiting for Triton") as spinner:

        def seen(version: Version) -> None:
            spinner.update(f"version {number}: {version.state}")

        ready: Version = cp.versions.wait_ready(tenant, model, number, timeout=timeout, on_state=seen)
    return ready


@versions_app.command("upload")
@handled
def versions_upload(
    model: str,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True),
    example: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="TorchScript: example inputs."
    ),
    wait: bool = typer.Option(False, "--wait", "-w", help="Wait until the version is loaded (or failed)."),
    timeout: float = typer.Option(300.0, help="Seconds --wait waits."),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Upload FILE as the model's next version (streamed, with a progress bar)."""
    cp = connect()
    owner = tenant_for(cp, tenant)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=stderr(), transient=False) as bar:
        task = bar.add_task(f"uploading {file.name}", total=None)
        version = cp.versions.upload(
            owner, model, file, example=example, progress=lambda s, t: bar.update(task, completed=s, total=t)
        )
    if wait:
        version = _wait(cp, owner, model, version.version, timeout)
    emit(version, output, lambda: _show_versions([version]))


@versions_app.command("wait")
@handled
def versions_wait(
    model: str,
    number: int,
    timeout: float = typer.Option(300.0, help="Seconds to wait."),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Wait until a version is loaded; exit 4 with Triton's message when it failed."""
    cp = connect()
    version = _wait(cp, tenant_for(cp, tenant), model, number, timeout)
    emit(version, output, lambda: _show_versions([version]))


@versions_app.command("delete")
@handled
def versions_delete(
    model: str, number: int, tenant: str | None = TenantOption, output: Format = OutputOption
) -> None:
    """Retire a version no alias uses."""
    cp = connect()
    retired = cp.versions.delete(tenant_for(cp, tenant), model, number)
    emit(retired, output, lambda: typer.echo(f"version {retired.version} of {model} retired"))


@versions_app.command("redeploy")
@handled
def versions_redeploy(
    model: str, number: int, tenant: str | None = TenantOption, output: Format = OutputOption
) -> None:
    """Admins: the version's artifact again as a new version with the model's current settings."""
    cp = connect()
    created = cp.versions.redeploy(tenant_for(cp, tenant), model, number)
    emit(created, output, lambda: _show_versions([created]))
