"""A thin client for the management API, so tests read as scenarios."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.http as triton_http
from fastapi import FastAPI

from control_plane.settings import Settings
from control_plane.state import AppState
from tests.support.builders import unique_name

ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex


class Api:
    """Calls the control plane as admin or with a given key."""

    def __init__(
        self, client: httpx.Client, *, admin_token: str, settings: Settings, app: FastAPI | None = None
    ):
        self.client = client
        self.admin_token = admin_token
        self.settings = settings
        self.app = app if app is not None else client.app  # type: ignore[attr-defined]

    @property
    def state(self) -> AppState:
        """The app's process-wide state (engine, loader, Triton endpoints)."""
        state: AppState = self.app.state.cp
        return state

    def headers(self, key: str | None = None) -> dict[str, str]:
        """Authorization header for `key` (admin when None)."""
        return {"Authorization": f"Bearer {key or self.admin_token}"}

    def tenant(self, name: str | None = None) -> str:
        """Create a tenant and return its name."""
        name = name or unique_name("tenant")
        response = self.client.post("/v1/tenants", json={"name": name}, headers=self.headers())
        assert response.status_code == 201, response.text
        return name

    def key(self, tenant: str, role: str = "publisher") -> str:
        """Create a key of `role` in `tenant` and return its secret."""
        response = self.client.post(f"/v1/tenants/{tenant}/keys", json={"role": role}, headers=self.headers())
        assert response.status_code == 201, response.text
        return str(response.json()["key"])

    def create_model(self, tenant: str, *, key: str | None = None, **body: Any) -> httpx.Response:
        """POST a model."""
        response: httpx.Response = self.client.post(
            f"/v1/tenants/{tenant}/models", json=body, headers=self.headers(key)
        )
        return response

    def upload(self, tenant: str, model: str, path: Path, *, key: str | None = None) -> httpx.Response:
        """Upload a version from a file."""
        with path.open("rb") as f:
            return self.client.post(
                f"/v1/tenants/{tenant}/models/{model}/versions",
                files={"file": (path.name, f, "application/octet-stream")},
                headers=self.headers(key),
            )

    def version(self, tenant: str, model: str, number: int, *, key: str | None = None) -> dict[str, Any]:
        """GET a version's detail."""
        response = self.client.get(
            f"/v1/tenants/{tenant}/models/{model}/versions/{number}", headers=self.headers(key)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def load(self, tenant: str, model: str, number: int, *, key: str | None = None) -> dict[str, Any]:
        """POST .../versions/{n}/load: load it now and wait (versions load on demand otherwise)."""
        response = self.client.post(
            f"/v1/tenants/{tenant}/models/{model}/versions/{number}/load", headers=self.headers(key)
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_settled(self, tenant: str, model: str, number: int, *, timeout: float = 120.0) -> dict[str, Any]:
        """Load a version (an upload no longer does) and poll it until it is ready or failed."""
        deadline = time.monotonic() + timeout
        if self.version(tenant, model, number)["state"] == "registered":
            self.load(tenant, model, number)
        while True:
            detail = self.version(tenant, model, number)
            if detail["state"] in ("ready", "failed") or time.monotonic() > deadline:
                return detail
            time.sleep(0.2)


def infer_direct(http_url: str, triton_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Infer on Triton itself with stock tritonclient.http; all outputs as numpy arrays."""
    from tritonclient.utils import np_to_triton_dtype

    with triton_http.InferenceServerClient(http_url.split("://", 1)[-1], network_timeout=60) as client:
        tensors = []
        for name, value in inputs.items():
            tensor = triton_http.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            tensor.set_data_from_numpy(value)
            tensors.append(tensor)
        result = client.infer(triton_name, tensors)
        outputs = result.get_response()["outputs"]
        return {o["name"]: result.as_numpy(o["name"]) for o in outputs}
