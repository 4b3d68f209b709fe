"""What a tenant owns, read as admin through the API (and Triton's repository index), to compare."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.api import Api


def _get(api: Api, path: str) -> Any:
    response = api.client.get(path, headers=api.headers())
    assert response.status_code == 200, (path, response.status_code, response.text)
    return response.json()


def _model(api: Api, tenant: str, name: str) -> dict[str, Any]:
    base = f"/v1/tenants/{tenant}/models/{name}"
    detail = _get(api, base)
    versions = _get(api, f"{base}/versions")
    return {
        "detail": detail,
        "versions": versions,
        "version_details": [_get(api, f"{base}/versions/{v['version']}") for v in versions],
        "aliases": {
            alias: {
                "history": _get(api, f"{base}/aliases/{alias}/history"),
                "traffic": _get(api, f"{base}/aliases/{alias}/traffic"),
            }
            for alias in sorted(detail.get("aliases", {}))
        },
    }


def tenant_state(api: Api, tenant: str, *, key_usage: bool = True) -> dict[str, Any]:
    """The tenant, its keys, and every model with versions, aliases, alias history and traffic.

    `key_usage=False` drops the keys' last_used_at (for a tenant whose keys the test itself uses).
    """
    api.state.key_usage.flush()  # last_used_at is written in batches; make it current
    keys = _get(api, f"/v1/tenants/{tenant}/keys")
    if not key_usage:
        keys = [{k: v for k, v in key.items() if k != "last_used_at"} for key in keys]
    models = _get(api, f"/v1/tenants/{tenant}/models")
    return {
        "tenant": _get(api, f"/v1/tenants/{tenant}"),
        "keys": keys,
        "models": models,
        "model_details": {m["name"]: _model(api, tenant, m["name"]) for m in models},
    }


def tenants_named(api: Api, marker: str) -> list[str]:
    """Names of the tenants whose name contains `marker` (a run's own tenants, created or not)."""
    return sorted(t["name"] for t in _get(api, "/v1/tenants") if marker in t["name"])


def triton_models(http_url: str, marker: str) -> list[dict[str, Any]]:
    """Triton's own repository index entries whose name contains `marker` (what it has loaded)."""
    response = httpx.post(f"{http_url}/v2/repository/index", json={}, timeout=30)
    assert response.status_code == 200, response.text
    return sorted((e for e in response.json() if marker in e.get("name", "")), key=lambda e: e["name"])
