"""CLI: login, logout, audit log, Triton instances, status."""

from __future__ import annotations

from datetime import datetime

import typer

from control_plane.client import config
from control_plane.client.api import ControlPlane
from control_plane.client.output import Format, OutputOption, emit, handled, table
from control_plane.client.session import connect

audit_app = typer.Typer(help="The audit log (admins).", no_args_is_help=True)
instances_app = typer.Typer(help="Triton instances of the fleet (admins).", no_args_is_help=True)
artifacts_app = typer.Typer(help="The artifact store (admins).", no_args_is_help=True)


@handled
def login(
    url: str = typer.Option(None, "--url", help="The control plane's URL, e.g. http://127.0.0.1:8080."),
    key: str = typer.Option(None, "--key", help="API key (asked for when not given)."),
    tenant: str | None = typer.Option(None, "--tenant", "-t", help="Default tenant for commands."),
) -> None:
    """Check a key against the control plane and keep URL, key and tenant in the user's config (0600)."""
    saved = config.resolve()
    url = url or saved.url or typer.prompt("Control plane URL", default="http://127.0.0.1:8080")
    key = key or typer.prompt("API key", hide_input=True)
    with ControlPlane(url, key) as cp:
        visible = [t.name for t in cp.tenants.list()]  # 401 for a bad key, before anything is saved
        if tenant:
            cp.tenants.get(tenant)  # 404 for a tenant the key cannot see, before anything is saved
    path = config.save(config.Profile(url=url, key=key, tenant=tenant or saved.tenant))
    sees = ", ".join(visible[:5]) + (" ..." if len(visible) > 5 else "") if visible else "no tenants yet"
    typer.echo(f"logged in to {url} (sees {sees}); saved in {path}")


def logout() -> None:
    """Forget the saved URL and key."""
    typer.echo("logged out" if config.forget() else "not logged in")


@audit_app.command("list")
@handled
def audit_list(
    tenant: str | None = typer.Option(None, "--tenant", "-t"),
    model: str | None = typer.Option(None, "--model", "-m"),
    action: str | None = typer.Option(None, "--action", help="e.g. alias.promote"),
    since: datetime | None = typer.Option(None, help="ISO 8601 time (UTC when no offset)."),
    until: datetime | None = typer.Option(None),
    limit: int = typer.Option(100, min=1, max=1000),
    output: Format = OutputOption,
) -> None:
    """Audit events, newest first."""
    found = connect().audit.list(
        tenant=tenant, model=model, action=action, since=since, until=until, limit=limit
    )
    rows = [(e.created_at, e.actor, e.action, e.tenant, e.model, e.target, e.outcome) for e in found]
    emit(
        found, output, lambda: table(["AT", "ACTOR", "ACTION", "TENANT", "MODEL", "TARGET", "OUTCOME"], rows)
    )


@instances_app.command("list")
@handled
def instances_list(output: Format = OutputOption) -> None:
    """Every Triton instance: state, address, placements."""
    found = connect().instances.list()
    rows = [
        (i.name, i.state, i.origin, i.http_url, len(i.placements), "yes" if i.draining else "-", i.last_error)
        for i in found
    ]
    emit(
        found, output, lambda: table(["NAME", "STATE", "ORIGIN", "HTTP", "MODELS", "DRAINING", "ERROR"], rows)
    )


@instances_app.command("get")
@handled
def instances_get(name: str, output: Format = OutputOption) -> None:
    """One instance and the versions placed on it."""
    found = connect().instances.get(name)

    def render() -> None:
        row = (found.name, found.state, found.http_url, found.grpc_url, found.last_error)
        table(["NAME", "STATE", "HTTP", "GRPC", "ERROR"], [row])
        rows = [(p.tenant, p.model, p.version, p.desired, p.observed, p.message) for p in found.placements]
        table(["TENANT", "MODEL", "VERSION", "DESIRED", "OBSERVED", "MESSAGE"], rows)

    emit(found, output, render)


@artifacts_app.command("sweep")
@handled
def artifacts_sweep(
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what would be deleted; delete nothing."),
    grace_s: float | None = typer.Option(
        None, "--grace-s", min=0, help="Keep unused artifacts stored more recently (server default)."
    ),
    output: Format = OutputOption,
) -> None:
    """Delete the artifacts no live version uses; name live versions whose artifact is missing (exit 1)."""
    found = connect().artifacts.sweep(dry_run=dry_run, grace_s=grace_s)

    def render() -> None:
        figures = [
            ("listed", found.listed, found.listed_bytes),
            ("in use", found.in_use, None),
            ("unused", found.unused, found.unused_bytes),
            ("kept: recent", found.recent, None),
            ("kept: taken meanwhile", found.taken, None),
            ("deleted (dry run)" if found.dry_run else "deleted", found.deleted, found.deleted_bytes),
            ("upload leftovers removed", found.leftovers_removed, None),
            ("missing", found.missing, None),
        ]
        table(["ARTIFACTS", "COUNT", "BYTES"], figures, title=f"sweep in {found.seconds:.1f} s")
        if found.missing_versions:
            rows = [(m.tenant, m.model, m.version, m.sha256) for m in found.missing_versions]
            table(["TENANT", "MODEL", "VERSION", "MISSING ARTIFACT"], rows)

    emit(found, output, render)
    if found.missing:
        raise typer.Exit(1)


@handled
def status(output: Format = OutputOption) -> None:
    """Database, artifact store, Tritons and the reconcile loop; exit 1 when something is not ok."""
    found = connect().status()
    rows = [
        ("database", "ok" if found.database.get("ok") else "down", found.database.get("detail")),
        (
            "artifact store",
            "ok" if found.artifact_store.get("ok") else "down",
            found.artifact_store.get("detail"),
        ),
        *((f"triton {t['name']}", t["state"], t["http_url"]) for t in found.tritons),
    ]
    if found.embedded_triton:
        rows.append(("embedded triton", found.embedded_triton["state"], found.embedded_triton.get("message")))
    if found.reconciler:
        failing = found.reconciler.get("failing", [])
        role = "leader" if found.reconciler.get("leader") else "follower"
        rows.append(("reconciler", role, f"{len(failing)} failing loads"))
    emit(
        found,
        output,
        lambda: table(["COMPONENT", "STATE", "DETAIL"], rows, title=f"control plane {found.version}"),
    )
    if not (found.database.get("ok") and found.artifact_store.get("ok")):
        raise typer.Exit(1)
