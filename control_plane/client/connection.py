"""One HTTP connection to the control plane: the key, timeouts, and errors turned into exceptions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from control_plane import __version__
from control_plane.client.errors import ConnectionFailed, ControlPlaneError, error_for


def path(*segments: str | int) -> str:
    """An API path with every segment percent-encoded (`path("v1", "tenants", t)` -> `/v1/tenants/t`)."""
    return "/" + "/".join(quote(str(s), safe="") for s in segments)


class Connection:
    """Sends requests with the key as a bearer token; error answers raise the SDK's exceptions."""

    def __init__(
        self,
        url: str,
        key: str | None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        base = {"User-Agent": f"control-plane-sdk/{__version__}", **(headers or {})}
        if key and (not key.isprintable() or any(c.isspace() for c in key)):
            raise ControlPlaneError("the API key contains spaces or line breaks: copy only the key itself")
        if key:
            base["Authorization"] = f"Bearer {key}"
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=base, timeout=timeout, transport=transport)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterable[bytes] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send one request; raise ConnectionFailed or the ApiError subclass for its status."""
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(
                method, url, json=json, params=query, headers=headers, content=content, **extra
            )
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(f"no answer from {self.url} in time ({type(exc).__name__})") from exc
        except httpx.LocalProtocolError as exc:
            raise ControlPlaneError(f"the request could not be sent: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach the control plane at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        return response

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send one request and return its JSON body (None for 204)."""
        response = self.request(method, url, **kwargs)
        return response.json() if response.content else None
