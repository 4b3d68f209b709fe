"""CLI verbs for aliases, traffic (canary and shadow) and a quick prediction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from control_plane.client.output import Format, OutputOption, emit, handled, table
from control_plane.client.session import TenantOption, configured_tenant, connect, tenant_for
from control_plane.client.types import AliasMove, Traffic

aliases_app = typer.Typer(help="Aliases: promote, roll back, history, delete.", no_args_is_help=True)
traffic_app = typer.Typer(help="Canary weights and shadow traffic of an alias.", no_args_is_help=True)
AliasOption = typer.Option("production", "--alias", "-a", help="Alias.")


def _moved(move: AliasMove, model: str) -> None:
    typer.echo(f"{model}@{move.alias}: {move.previous_version or '-'} -> {move.version} ({move.action})")


@aliases_app.command("list")
@handled
def aliases_list(model: str, tenant: str | None = TenantOption, output: Format = OutputOption) -> None:
    """The model's aliases and their versions."""
    cp = connect()
    found = cp.models.get(tenant_for(cp, tenant), model).aliases
    emit(found, output, lambda: table(["ALIAS", "VERSION"], sorted(found.items())))


@aliases_app.command("promote")
@handled
def aliases_promote(
    model: str,
    version: int,
    alias: str = AliasOption,
    reason: str | None = typer.Option(None, help="Kept in the history and the audit log."),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Point the alias at VERSION (loaded and ready first)."""
    cp = connect(timeout=600)
    move = cp.aliases.promote(tenant_for(cp, tenant), model, version, alias=alias, reason=reason)
    emit(move, output, lambda: _moved(move, model))


@aliases_app.command("rollback")
@handled
def aliases_rollback(
    model: str,
    alias: str = AliasOption,
    to: int | None = typer.Option(None, "--to", help="Version to go back to (default: the previous one)."),
    reason: str | None = typer.Option(None),
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Move the alias back to its previous version."""
    cp = connect(timeout=600)
    move = cp.aliases.rollback(tenant_for(cp, tenant), model, alias=alias, to_version=to, reason=reason)
    emit(move, output, lambda: _moved(move, model))


@aliases_app.command("history")
@handled
def aliases_history(
    model: str, alias: str = AliasOption, tenant: str | None = TenantOption, output: Format = OutputOption
) -> None:
    """Every move of the alias, newest first."""
    cp = connect()
    found = cp.aliases.history(tenant_for(cp, tenant), model, alias=alias)
    rows = [(h.at, h.action, h.from_version, h.to_version, h.actor, h.reason) for h in found]
    emit(found, output, lambda: table(["AT", "ACTION", "FROM", "TO", "ACTOR", "REASON"], rows))


@aliases_app.command("delete")
@handled
def aliases_delete(
    model: str,
    alias: str = typer.Option(..., "--alias", "-a", help="Alias to remove (no default)."),
    tenant: str | None = TenantOption,
) -> None:
    """Remove the alias with its canary split, shadow and history (the audit trail keeps what it was)."""
    cp = connect()
    cp.aliases.delete(tenant_for(cp, tenant), model, alias=alias)
    typer.echo(f"{model}@{alias} deleted")


def _show_traffic(traffic: Traffic) -> None:
    routes = ", ".join(f"v{r.version}={r.weight}%" for r in traffic.routes) or f"v{traffic.version}=100%"
    shadow = f"v{traffic.shadow.version} ({traffic.shadow.percent}%)" if traffic.shadow else "-"
    table(["ALIAS", "VERSION", "ROUTES", "SHADOW"], [(traffic.alias, traffic.version, routes, shadow)])
    if traffic.shadow_stats:
        table(["SHADOW STAT", "VALUE"], sorted(traffic.shadow_stats.items()))


def _pair(text: str, what: str) -> tuple[int, int]:
    try:
        version, share = (int(p) for p in text.split("=", 1))
    except ValueError:
        raise typer.BadParameter(f"'{text}': expected VERSION={what}, e.g. 2=10") from None
    return version, share


@traffic_app.command("get")
@handled
def traffic_get(
    model: str, alias: str = AliasOption, tenant: str | None = TenantOption, output: Format = OutputOption
) -> None:
    """The alias' split, shadow and shadow comparison statistics."""
    cp = connect()
    found = cp.traffic.get(tenant_for(cp, tenant), model, alias=alias)
    emit(found, output, lambda: _show_traffic(found))


@traffic_app.command("set")
@handled
def traffic_set(
    model: str,
    route: list[str] = typer.Option([], "--route", "-r", help="VERSION=WEIGHT (repeat; weights sum to 100)."),
    shadow: str | None = typer.Option(None, "--shadow", help="VERSION=PERCENT mirrored to a version."),
    alias: str = AliasOption,
    tenant: str | None = TenantOption,
    output: Format = OutputOption,
) -> None:
    """Split the alias' traffic (canary) and/or mirror a share of it (shadow)."""
    weights = dict(_pair(r, "WEIGHT") for r in route)
    mirrored = _pair(shadow, "PERCENT") if shadow else None
    cp = connect(timeout=600)
    found = cp.traffic.set(tenant_for(cp, tenant), model, alias=alias, weights=weights, shadow=mirrored)
    emit(found, output, lambda: _show_traffic(found))


@traffic_app.command("clear")
@handled
def traffic_clear(
    model: str, alias: str = AliasOption, tenant: str | None = TenantOption, output: Format = OutputOption
) -> None:
    """No canary, no shadow: the alias' version takes all its traffic."""
    cp = connect()
    found = cp.traffic.clear(tenant_for(cp, tenant), model, alias=alias)
    emit(found, output, lambda: _show_traffic(found))


def _input(text: str) -> tuple[str, Any]:
    """`name=@file.npy` (or .json), or `name=<JSON>`."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise typer.BadParameter(f"'{text}': expected NAME=@FILE.npy or NAME=JSON, e.g. x='[[1, 2, 3, 4]]'")
    if value.startswith("@"):
        source = Path(value[1:])
        if source.suffix == ".npy":
            import numpy as np

            return name, np.load(source, allow_pickle=False).tolist()
        return name, json.loads(source.read_text())
    try:
        return name, json.loads(value)
    except ValueError:
        raise typer.BadParameter(f"input '{name}': not JSON: {value[:80]}") from None


@handled
def predict(
    model: str = typer.Argument(..., help="The tenant's model name."),
    inputs: list[str] = typer.Option(..., "--input", "-i", help="NAME=@FILE.npy or NAME=JSON (repeat)."),
    alias: str | None = typer.Option(None, "--alias", "-a", help="Alias (default production)."),
    routing_key: str | None = typer.Option(None, help="Makes a canary split sticky."),
    tenant: str | None = typer.Option(
        None, "--tenant", "-t", help="Admin keys: the tenant to infer for (X-Tenant); default CP_TENANT."
    ),
    output: Format = OutputOption,
) -> None:
    """Call /v1/predict/MODEL once and print which version answered and its outputs."""
    values = dict(_input(i) for i in inputs)
    cp = connect()
    answer = cp.predict(model, values, alias=alias, tenant=configured_tenant(tenant), routing_key=routing_key)
    rows = [(name, json.dumps(value)) for name, value in answer.outputs.items()]
    emit(answer, output, lambda: table(["OUTPUT", f"VALUE ({answer.model} v{answer.version})"], rows))
