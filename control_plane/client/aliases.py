"""Aliases: promote, roll back, history, delete; traffic: canary weights and shadow."""

from __future__ import annotations

from collections.abc import Mapping

from control_plane.client.connection import Connection, path
from control_plane.client.types import AliasMove, HistoryEntry, Traffic


def _url(tenant: str, model: str, alias: str, *rest: str) -> str:
    return path("v1", "tenants", tenant, "models", model, "aliases", alias, *rest)


class Aliases:
    """`.../models/{m}/aliases/{a}`: moves are one transaction with their history and audit rows."""

    def __init__(self, conn: Connection, *, timeout: float = 600.0):
        self._conn = conn
        self._timeout = timeout  # a promotion loads the version and waits until Triton has it ready

    def promote(
        self, tenant: str, model: str, version: int, *, alias: str = "production", reason: str | None = None
    ) -> AliasMove:
        """Point the alias at `version` (loaded and ready first)."""
        body = {"version": version, "reason": reason}
        answer = self._conn.json("PUT", _url(tenant, model, alias), json=body, timeout=self._timeout)
        return AliasMove.model_validate(answer)

    def rollback(
        self,
        tenant: str,
        model: str,
        *,
        alias: str = "production",
        to_version: int | None = None,
        reason: str | None = None,
    ) -> AliasMove:
        """Back to the alias' previous version (or `to_version`)."""
        body = {"to_version": to_version, "reason": reason}
        url = _url(tenant, model, alias, "rollback")
        return AliasMove.model_validate(self._conn.json("POST", url, json=body, timeout=self._timeout))

    def history(self, tenant: str, model: str, *, alias: str = "production") -> list[HistoryEntry]:
        """Every move of the alias, newest first."""
        return [
            HistoryEntry.model_validate(h) for h in self._conn.listing(_url(tenant, model, alias, "history"))
        ]

    def delete(self, tenant: str, model: str, *, alias: str) -> None:
        """Remove the alias with its canary split, shadow and history (no default: name the alias)."""
        self._conn.request("DELETE", _url(tenant, model, alias))


class TrafficSplits:
    """`.../aliases/{a}/traffic`."""

    def __init__(self, conn: Connection, *, timeout: float = 600.0):
        self._conn = conn
        self._timeout = timeout

    def get(self, tenant: str, model: str, *, alias: str = "production") -> Traffic:
        """The alias' split, shadow and shadow comparison statistics."""
        return Traffic.model_validate(self._conn.json("GET", _url(tenant, model, alias, "traffic")))

    def set(
        self,
        tenant: str,
        model: str,
        *,
        alias: str = "production",
        weights: Mapping[int, int] | None = None,
        shadow: tuple[int, int] | None = None,
    ) -> Traffic:
        """Canary `weights` {version: percent} (summing to 100) and `shadow` (version, percent);
        empty weights and no shadow clear the split."""
        body = {
            "routes": [{"version": v, "weight": w} for v, w in (weights or {}).items()],
            "shadow": {"version": shadow[0], "percent": shadow[1]} if shadow else None,
        }
        url = _url(tenant, model, alias, "traffic")
        return Traffic.model_validate(self._conn.json("PUT", url, json=body, timeout=self._timeout))

    def clear(self, tenant: str, model: str, *, alias: str = "production") -> Traffic:
        """No canary, no shadow: the alias' version takes all its traffic."""
        return self.set(tenant, model, alias=alias)
