"""CLI verbs for tenants, keys, models and versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from control_plane.client.output import Format, OutputOption, emit, handled, stderr, stdout, table
from control_plane.client.session import TenantOption, connect, tenant_for
from control_plane.client.types import Model, Version

tenants_app = typer.Typer(help="Tenants (admins create them).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of a tenant (admins).", no_args_is_help=True)
models_app = typer.Typer(help="Models of a tenant.", no_args_is_help=True)
versions_app = typer.Typer(
    help="Versions of a model: upload, wait until loaded, inspect.", no_args_is_help=True
)


@tenants_app.command("list")
@handled
def tenants_list(output: Format = OutputOption) -> None:
    """The tenants the key may see."""
    found = connect().tenants.list()
    emit(found, output, lambda: table(["NAME", "CREATED"], [(t.name, t.created_at) for t in found]))


@tenants_app.command("create")
@handled
def tenants_create(name: str, output: Format = OutputOption) -> None:
    """Create a tenant."""
    created = connect().tenants.create(name)
    emit(created, output, lambda: typer.echo(f"tenant {created.name} created"))


@tenants_app.command("get")
@handled
def tenants_get(name: str, output: Format = OutputOption) -> None:
    """One tenant."""
    found = connect().tenants.get(name)
    emit(found, output, lambda: table(["NAME", "CREATED"], [(found.name, found.created_at)]))


@keys_app.command("list")
@handled
def keys_list(tenant: str | None = TenantOption, output: Format = OutputOption) -> None:
    """The tenant's keys (no secrets)."""
    cp = connect()
    found = cp.keys.list(tenant_for(cp, tenant))
    columns = ["ID", "PREFIX", "ROLE", "DESCRIPTION", "CREATED", "LAST USED", "REVOKED"]
    rows = [
        (k.id, k.prefix, k.role, k.description, k.created_at, k.last_used_at, k.revoked_at) for k in found
    ]
    emit(found, output, lambda: table(columns, rows))


@keys_app.command("create")
@handled
def keys_create(
    role: str = typer.Option(..., "--role", "-r", help="publisher or consumer."),
    description: str | None = typer.Option(None, "--description", "-d"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the secret."),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Create a key; its secret is shown this one time."""
    cp = connect()
    created = cp.keys.create(tenant_for(cp, tenant), role=role, description=description)
    if quiet:
        typer.echo(created.key)
        return
    emit(
        created,
        output,
        lambda: table(["ID", "ROLE", "KEY (shown once)"], [(created.id, created.role, created.key)]),
    )


@keys_app.command("revoke")
@handled
def keys_revoke(key_id: int, tenant: str | None = TenantOption, output: Format = OutputOption) -> None:
    """Revoke a key by id."""
    cp = connect()
    revoked = cp.keys.revoke(tenant_for(cp, tenant), key_id)
    emit(revoked, output, lambda: typer.echo(f"key {revoked.id} ({revoked.prefix}) revoked"))


def _aliases(model: Model) -> str:
    return ", ".join(f"{a}={v}" for a, v in sorted(model.aliases.items())) or "-"


@models_app.command("list")
@handled
def models_list(tenant: str | None = TenantOption, output: Format = OutputOption) -> None:
    """The tenant's models."""
    cp = connect()
    found = cp.models.list(tenant_for(cp, tenant))
    rows = [
        (m.name, m.format, len(m.versions), _aliases(m), m.serving.get("max_batch_size"), m.created_at)
        for m in found
    ]
    emit(
        found, output, lambda: table(["NAME", "FORMAT", "VERSIONS", "ALIASES", "MAX BATCH", "CREATED"], rows)
    )


def _show_model(model: Model) -> None:
    group = model.serving.get("instance_group", {})
    batching = model.serving.get("dynamic_batching", {})
    table(
        ["NAME", "FORMAT", "ALIASES", "MAX BATCH", "DYNAMIC BATCHING", "INSTANCES"],
        [
            (
                model.name,
                model.format,
                _aliases(model),
                model.serving.get("max_batch_size"),
                batching.get("enabled"),
                f"{group.get('count')} x {group.get('kind')}",
            )
        ],
    )
    if model.versions:
        table(["VERSION", "STATE", "CREATED"], [(v.version, v.state, v.created_at) for v in model.versions])


@models_app.command("get")
@handled
def models_get(name: str, tenant: str | None = TenantOption, output: Format = OutputOption) -> None:
    """One model: serving settings, versions, aliases."""
    cp = connect()
    found = cp.models.get(tenant_for(cp, tenant), name)
    emit(found, output, lambda: _show_model(found))


def _tensor(text: str) -> dict[str, Any]:
    """`name:DATATYPE:d1,d2` (-1 = dynamic) as the API's tensor spec."""
    try:
        name, datatype, dims = text.rsplit(":", 2)
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        raise typer.BadParameter(f"'{text}': expected NAME:DATATYPE:DIMS, e.g. x:FP32:-1,4") from None
    return {"name": name, "datatype": datatype.upper(), "shape": shape}


@models_app.command("create")
@handled
def models_create(
    name: str,
    format: str = typer.Option(..., "--format", "-f", help="onnx, torchscript or python."),
    max_batch_size: int | None = typer.Option(None, help="Default: chosen from the signature."),
    instances: int | None = typer.Option(None, help="Model instances per Triton."),
    inputs: list[str] = typer.Option(
        [], "--in", help="Declared input NAME:DATATYPE:DIMS, e.g. x:FP32:-1,4 (repeat)."
    ),
    outputs: list[str] = typer.Option([], "--out", help="Declared output NAME:DATATYPE:DIMS (repeat)."),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Register a model (python: admins only)."""
    spec: dict[str, Any] = {
        "max_batch_size": max_batch_size,
        "instance_group": {"count": instances} if instances else None,
        "inputs": [_tensor(t) for t in inputs] or None,
        "outputs": [_tensor(t) for t in outputs] or None,
    }
    cp = connect()
    created = cp.models.create(tenant_for(cp, tenant), name=name, format=format, **spec)
    emit(created, output, lambda: typer.echo(f"model {created.name} ({created.format}) created"))


@models_app.command("delete")
@handled
def models_delete(name: str, tenant: str | None = TenantOption) -> None:
    """Delete a model: its versions are unloaded and retired (the audit trail stays)."""
    cp = connect()
    cp.models.delete(tenant_for(cp, tenant), name)
    typer.echo(f"model {name} deleted")


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


def _wait(cp: Any, tenant: str, model: str, number: int, timeout: float) -> Version:
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
