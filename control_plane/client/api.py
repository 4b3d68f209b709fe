"""`ControlPlane`: the SDK's entry point."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from control_plane.client.aliases import Aliases, TrafficSplits
from control_plane.client.connection import Connection
from control_plane.client.errors import ControlPlaneError
from control_plane.client.inference import Inference
from control_plane.client.resources import Artifacts, Audit, Instances, Keys, Models, Tenants
from control_plane.client.types import Prediction, Status
from control_plane.client.versions import Versions


class ControlPlane:
    """A synchronous client of the control plane's API.

    >>> cp = ControlPlane("http://127.0.0.1:8080", key)
    >>> cp.models.create("acme", name="mlp", format="onnx")
    >>> v = cp.versions.upload("acme", "mlp", "mlp.onnx", progress=print)
    >>> cp.versions.wait_ready("acme", "mlp", v.version)
    >>> cp.aliases.promote("acme", "mlp", v.version)

    `transport` (an httpx transport, e.g. `httpx.MockTransport`) replaces the network for tests.
    """

    def __init__(
        self,
        url: str,
        key: str | None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        self.connection = Connection(url, key, timeout=timeout, transport=transport, headers=headers)
        self.tenants = Tenants(self.connection)
        self.keys = Keys(self.connection)
        self.models = Models(self.connection)
        self.versions = Versions(self.connection)
        self.aliases = Aliases(self.connection)
        self.traffic = TrafficSplits(self.connection)
        self.audit = Audit(self.connection)
        self.instances = Instances(self.connection)
        self.artifacts = Artifacts(self.connection)
        self.inference = Inference(self.connection)

    @property
    def url(self) -> str:
        """The control plane's base URL."""
        return self.connection.url

    def status(self) -> Status:
        """Database, artifact store, Tritons and the reconcile loop (admins)."""
        return Status.model_validate(self.connection.json("GET", "/v1/status"))

    def ready(self) -> bool:
        """Whether `/v2/health/ready` answers 200 (database and a Triton ready)."""
        try:
            self.connection.request("GET", "/v2/health/ready")
        except ControlPlaneError:
            return False
        return True

    def predict(self, model: str, inputs: Mapping[str, Any], **kwargs: Any) -> Prediction:
        """`/v1/predict/{model}`: see `Inference.predict`."""
        return self.inference.predict(model, inputs, **kwargs)

    def close(self) -> None:
        """Close the connection pool."""
        self.connection.close()

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
