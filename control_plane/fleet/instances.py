"""Triton instances known to this process, from settings or the embedded server."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from control_plane.db.models import TritonInstance
from control_plane.fleet import repository
from control_plane.tritonserver import TritonClient


@dataclass(frozen=True)
class TritonEndpoint:
    """One Triton server: its URLs, a client for loads (long timeout) and one for health probes (short)."""

    name: str
    http_url: str
    grpc_url: str
    client: TritonClient
    health: TritonClient

    @classmethod
    def connect(
        cls,
        *,
        name: str,
        http_url: str,
        grpc_url: str,
        timeout_s: float,
        load_timeout_s: float,
        health_timeout_s: float | None = None,
        load_over_grpc: bool = False,
    ) -> TritonEndpoint:
        """Clients for one Triton: loads give up after `load_timeout_s` (connecting after `timeout_s`),
        health and index calls after `health_timeout_s` (default `timeout_s`).

        `load_over_grpc` when `grpc_url` is known to be right: a load over HTTP holds up Triton's
        other HTTP connections (inference included) served by the same worker thread until it ends.
        """
        return cls(
            name=name,
            http_url=http_url,
            grpc_url=grpc_url,
            client=TritonClient.from_url(
                http_url,
                timeout_s=load_timeout_s,
                connect_timeout_s=timeout_s,
                grpc_url=grpc_url if load_over_grpc else None,
            ),
            health=TritonClient.from_url(http_url, timeout_s=health_timeout_s or timeout_s),
        )

    def close(self) -> None:
        """Close both clients' connections (Triton waits for open connections when it shuts down)."""
        self.client.close()
        self.health.close()


def grpc_url_for(http_url: str) -> str:
    """Triton's default gRPC address next to an HTTP URL (port + 1)."""
    parts = urlsplit(http_url)
    port = parts.port or 8000
    return f"{parts.hostname}:{port + 1}"


def endpoints_from_urls(
    http_urls: list[str],
    grpc_urls: list[str],
    *,
    timeout_s: float,
    load_timeout_s: float,
    health_timeout_s: float | None = None,
    names: list[str] | None = None,
) -> list[TritonEndpoint]:
    """Endpoints for configured URLs, named by `names` (same order) or else host:port; gRPC URLs
    default to the HTTP port + 1.

    Loads go over gRPC where the gRPC URL is configured rather than guessed.
    """
    names = names or []
    return [
        TritonEndpoint.connect(
            name=names[index] if index < len(names) else urlsplit(http_url).netloc,
            http_url=http_url,
            grpc_url=grpc_urls[index] if index < len(grpc_urls) else grpc_url_for(http_url),
            timeout_s=timeout_s,
            load_timeout_s=load_timeout_s,
            health_timeout_s=health_timeout_s,
            load_over_grpc=index < len(grpc_urls),
        )
        for index, http_url in enumerate(http_urls)
    ]


def register_instances(
    session: Session, endpoints: list[TritonEndpoint], *, origin: str = "settings"
) -> None:
    """Record this process's instances in the registry, found by stable name, with their current URLs."""
    for endpoint in endpoints:
        repository.upsert_instance(
            session, name=endpoint.name, http_url=endpoint.http_url, grpc_url=endpoint.grpc_url, origin=origin
        )


def endpoint_for_row(
    row: TritonInstance, *, timeout_s: float, load_timeout_s: float, health_timeout_s: float
) -> TritonEndpoint:
    """The endpoint of an instance known only from its row (added through the API): loads over gRPC."""
    return TritonEndpoint.connect(
        name=row.name,
        http_url=row.http_url,
        grpc_url=row.grpc_url,
        timeout_s=timeout_s,
        load_timeout_s=load_timeout_s,
        health_timeout_s=health_timeout_s,
        load_over_grpc=True,
    )
