"""The CLI's SDK client and tenant, from flags, the environment and `login`'s file."""

from __future__ import annotations

import typer

from control_plane.client import config
from control_plane.client.api import ControlPlane
from control_plane.client.output import EXIT_USAGE, fail

TenantOption = typer.Option(
    None, "--tenant", "-t", help="Tenant (default: CP_TENANT, login's, or the key's only tenant)."
)


def connect(*, timeout: float = 60.0) -> ControlPlane:
    """A client for the configured control plane; exit 2 with what to do when none is configured."""
    try:
        profile = config.resolve()
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    if not profile.url:
        raise fail(
            "no control plane configured: run `control-plane login --url URL` or set CP_URL and CP_KEY",
            EXIT_USAGE,
        )
    if not profile.key:
        raise fail("no key configured: run `control-plane login` or set CP_KEY", EXIT_USAGE)
    return ControlPlane(profile.url, profile.key, timeout=timeout)


def configured_tenant(given: str | None) -> str | None:
    """--tenant, else CP_TENANT, else login's tenant (None when none is set)."""
    return given or config.resolve().tenant


def tenant_for(cp: ControlPlane, given: str | None) -> str:
    """The tenant to act on; the key's own one when it sees exactly one."""
    chosen = configured_tenant(given)
    if chosen:
        return chosen
    visible = cp.tenants.list()
    if len(visible) == 1:
        return visible[0].name
    raise fail(
        "which tenant? give --tenant (or set CP_TENANT, or `control-plane login --tenant`)", EXIT_USAGE
    )
