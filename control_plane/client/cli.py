"""The client verbs of `control-plane` (on the SDK), mounted beside serve/db/triton."""

from __future__ import annotations

import typer

from control_plane.client.cli_admin import artifacts_app, audit_app, instances_app, login, logout, status
from control_plane.client.cli_registry import keys_app, models_app, tenants_app
from control_plane.client.cli_serving import aliases_app, predict, traffic_app
from control_plane.client.cli_versions import versions_app


def register(app: typer.Typer) -> None:
    """Add login/logout, the resource verbs (tenants ... instances), status and predict to `app`."""
    app.command("login")(login)
    app.command("logout")(logout)
    for name, group in (
        ("tenants", tenants_app),
        ("keys", keys_app),
        ("models", models_app),
        ("versions", versions_app),
        ("aliases", aliases_app),
        ("traffic", traffic_app),
        ("audit", audit_app),
        ("instances", instances_app),
        ("artifacts", artifacts_app),
    ):
        app.add_typer(group, name=name)
    app.command("status")(status)
    app.command("predict")(predict)
