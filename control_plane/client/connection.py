"""One HTTP connection to the control plane: the key, timeouts, and errors turned into exceptions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from control_plane import __version__
from control_plane.client.errors import ConnectionFailed, ControlPlaneError, error_for


def path(*segments: str | int) -> str:
    """An API path with every segment percent-encoded (`path("v1", "tenants", t)` -> `/v1/tenants/t`); an
    empty one is a ValueError (`tenants.delete("")` sent `DELETE /v1/tenants/`, which the server
    redirected, and reported success)."""
    if any(str(s) == "" for s in segments):
        raise ValueError("a name may not be empty")
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
                method, url, json=json, params=query or None, headers=headers, content=content, **extra
            )
        except httpx.TimeoutException as exc:
            raise ConnectionFailed(f"no answer from {self.url} in time ({type(exc).__name__})") from exc
        except httpx.LocalProtocolError as exc:
            raise ControlPlaneError(f"the request could not be sent: {exc}") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach the control plane at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise error_for(response)
        if response.status_code >= 300:  # the API redirects nothing it serves: not the request meant
            raise ControlPlaneError(f"unexpected answer {response.status_code} to {method} {url}")
        return response

    def json(self, method: str, url: str, **kwargs: Any) -> Any:
        """Send one request and return its JSON body (None for 204)."""
        response = self.request(method, url, **kwargs)
        return response.json() if response.content else None

    def listing(
        self, url: str, *, params: Mapping[str, Any] | None = None, most: int | None = None
    ) -> list[Any]:
        """Every item of a paged listing (or its first `most`), following its `Link: rel="next"` pages."""
        items: list[Any] = []
        followed: set[str] = set()
        following: str | None = url
        while following is not None and (most is None or len(items) < most):
            response = self.request("GET", following, params=params)
            page = response.json()
            items.extend(page)
            followed.add(str(response.url))
            following, params = (_next_page(response) if page else None), None  # the link carries the query
            if following in followed:
                raise ControlPlaneError(
                    f"the control plane's page links go round in a circle at {following!r}"
                )
        return items if most is None else items[:most]


def _next_page(response: httpx.Response) -> str | None:
    """The URL of the page after this one: the same listing (scheme, host, port and path), so the key
    never goes anywhere else, whatever the link says."""
    link = response.links.get("next", {}).get("url")
    if link is None:
        return None
    try:
        following = response.url.join(link)
    except httpx.InvalidURL as exc:
        raise ControlPlaneError(
            f"the control plane answered a page link that is not a URL: {link!r}"
        ) from exc
    here = response.url
    if (following.scheme, following.host, following.port, following.path) != (
        here.scheme,
        here.host,
        here.port,
        here.path,
    ):
        raise ControlPlaneError(f"the control plane answered a page link to another place: {link!r}")
    return str(following)
