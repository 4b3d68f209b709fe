"""CLI verbs for tenants, keys and models."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from control_plane.client.output import Format, OutputOption, cell, emit, handled, table
from control_plane.client.session import TenantOption, connect, tenant_for
from control_plane.client.types import Model, Tenant

tenants_app = typer.Typer(help="Tenants (admins create them).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of a tenant (admins).", no_args_is_help=True)
models_app = typer.Typer(help="Models of a tenant.", no_args_is_help=True)


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
    """One tenant, with its quotas and what it holds."""
    found = connect().tenants.get(name)
    emit(found, output, lambda: _quota_table(found))


@tenants_app.command("delete")
@handled
def tenants_delete(
    name: str, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
) -> None:
    """Delete a tenant: its models are deleted and unloaded, its keys revoked (not undone; the name is
    not reused; the audit trail stays)."""
    if not yes:
        typer.confirm(f"Delete tenant {name} with all its models and keys?", abort=True)
    connect().tenants.delete(name)
    typer.echo(f"tenant {name} deleted")


def _quota_table(tenant: Tenant) -> None:
    title = f"{tenant.name} (created {cell(tenant.created_at)})"
    limits, used = tenant.quota, tenant.usage
    if limits is None or used is None:  # a server older than quotas
        table(["NAME", "CREATED"], [(tenant.name, tenant.created_at)])
        return
    rows = [
        ("models", used.models, limits.max_models),
        ("versions", used.versions, limits.max_versions),
        ("artifact bytes", used.artifact_bytes, limits.max_artifact_bytes),
        *([("aliases", used.aliases, limits.max_aliases)] if used.aliases is not None else []),
        *([("live keys", used.keys, limits.max_keys)] if used.keys is not None else []),
    ]
    shown = [(what, held, "unlimited" if most is None else most) for what, held, most in rows]
    table(["", "HOLDS", "QUOTA"], shown, title=title)
    own = tenant.limits
    if own is not None:  # a server older than inference limits has none
        rate = "unlimited" if own.rate_per_s is None else f"{own.rate_per_s:g}/s (burst {own.burst})"
        most = "unlimited" if own.max_concurrency is None else own.max_concurrency
        table(["INFERENCE", "LIMIT"], [("rate", rate), ("in flight", most)])


def _limit(value: str | None, option: str) -> int | None:
    if value == "default":
        return None
    try:
        return int(value or "")
    except ValueError:
        raise typer.BadParameter(f"{option} takes a whole number, or 'default'") from None


@tenants_app.command("quota")
@handled
def tenants_quota(
    name: str,
    max_models: str | None = typer.Option(None, help="Live models; 'default' for the server's default."),
    max_versions: str | None = typer.Option(None, help="Live versions of all its models together."),
    max_artifact_bytes: str | None = typer.Option(None, help="Bytes of the distinct artifacts it uses."),
    max_aliases: str | None = typer.Option(None, help="Aliases of all its models together."),
    max_keys: str | None = typer.Option(None, help="API keys neither revoked nor expired."),
    output: Format = OutputOption,
) -> None:
    """Set a tenant's quotas (admins); an option left out keeps its value."""
    given = {
        key: _limit(value, "--" + key.replace("_", "-"))
        for key, value in {
            "max_models": max_models,
            "max_versions": max_versions,
            "max_artifact_bytes": max_artifact_bytes,
            "max_aliases": max_aliases,
            "max_keys": max_keys,
        }.items()
        if value is not None
    }
    if not given:
        raise typer.BadParameter(
            "give --max-models, --max-versions, --max-artifact-bytes, --max-aliases or --max-keys"
        )
    found = connect().tenants.set_quota(name, **given)
    emit(found, output, lambda: _quota_table(found))


@tenants_app.command("limits")
@handled
def tenants_limits(
    name: str,
    rate: str | None = typer.Option(None, help="Inference requests a second (0: unlimited; 'default')."),
    burst: str | None = typer.Option(None, help="Requests allowed at once above the rate ('default')."),
    max_concurrency: str | None = typer.Option(None, help="Inference requests in flight (0: unlimited)."),
    output: Format = OutputOption,
) -> None:
    """Set a tenant's inference limits (admins); an option left out keeps its value."""
    given: dict[str, float | None] = {}
    if rate is not None:
        given["rate_per_s"] = _rate(rate)
    for key, value in {"burst": burst, "max_concurrency": max_concurrency}.items():
        if value is not None:
            given[key] = _limit(value, "--" + key.replace("_", "-"))
    if not given:
        raise typer.BadParameter("give --rate, --burst or --max-concurrency")
    found = connect().tenants.set_limits(name, **given)
    emit(found, output, lambda: _quota_table(found))


def _rate(value: str) -> float | None:
    if value == "default":
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = math.nan
    if not math.isfinite(rate) or rate < 0:
        raise typer.BadParameter("--rate takes a number of requests a second (0: unlimited), or 'default'")
    return rate


@keys_app.command("list")
@handled
def keys_list(
    tenant: str | None = TenantOption,
    admin: bool = typer.Option(False, "--admin", help="The admin keys (bound to no tenant) instead."),
    output: Format = OutputOption,
) -> None:
    """The tenant's keys, or the admin keys (no secrets)."""
    cp = connect()
    found = cp.keys.list_admin() if admin else cp.keys.list(tenant_for(cp, tenant))
    columns = ["ID", "PREFIX", "ROLE", "DESCRIPTION", "CREATED", "LAST USED", "EXPIRES", "REVOKED"]
    rows = [
        (k.id, k.prefix, k.role, k.description, k.created_at, k.last_used_at, k.expires_at, k.revoked_at)
        for k in found
    ]
    emit(found, output, lambda: table(columns, rows))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `3600s` or `3600` as a timedelta; a clear error for anything else."""
    match = re.fullmatch(r"\s*(\d{1,9})\s*([smhd]?)\s*", text)
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90d, 12h, 30m or 3600s")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds > 100 * 365 * 86400:
        raise typer.BadParameter(
            f"{text!r} is more than 100 years: leave it out for a key that does not expire"
        )
    return timedelta(seconds=seconds)


@keys_app.command("create")
@handled
def keys_create(
    role: str = typer.Option(..., "--role", "-r", help="publisher or consumer; admin: bound to no tenant."),
    description: str | None = typer.Option(None, "--description", "-d"),
    expires_in: str | None = typer.Option(
        None, "--expires-in", help="The key stops working after this long: 90d, 12h, 30m, 3600s."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the secret."),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Create a key; its secret is shown this one time."""
    expires_at = datetime.now(UTC) + duration(expires_in) if expires_in is not None else None
    cp = connect()
    if role == "admin":
        created = cp.keys.create_admin(description=description, expires_at=expires_at)
    else:
        created = cp.keys.create(
            tenant_for(cp, tenant), role=role, description=description, expires_at=expires_at
        )
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
def keys_revoke(
    key_id: int,
    tenant: str | None = TenantOption,
    admin: bool = typer.Option(False, "--admin", help="An admin key (bound to no tenant)."),
    output: Format = OutputOption,
) -> None:
    """Revoke a key by id."""
    cp = connect()
    revoked = cp.keys.revoke_admin(key_id) if admin else cp.keys.revoke(tenant_for(cp, tenant), key_id)
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
