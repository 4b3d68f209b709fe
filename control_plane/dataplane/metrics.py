"""Prometheus metrics of the data plane (one registry per app, so tests and replicas don't collide)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class DataPlaneMetrics:
    """Requests by tenant/model/version/status, latency of the whole request and of the upstream call."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "cp_inference_requests_total",
            "Inference requests by outcome",
            ["tenant", "model", "version", "protocol", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cp_inference_request_seconds",
            "Whole request time in the control plane",
            ["tenant", "model", "protocol"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.upstream = Histogram(
            "cp_inference_upstream_seconds",
            "Time waiting for Triton",
            ["tenant", "model", "protocol"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "cp_inference_in_flight", "Requests being served", ["protocol"], registry=self.registry
        )
        self.http_in_flight = self.in_flight.labels("http")  # looked up once, not per request

    def observe(
        self,
        *,
        tenant: str,
        model: str,
        version: str,
        protocol: str,
        status: int | str,
        total_s: float,
        upstream_s: float | None,
    ) -> None:
        """Record one finished request."""
        self.requests.labels(tenant, model, version, protocol, str(status)).inc()
        self.latency.labels(tenant, model, protocol).observe(total_s)
        if upstream_s is not None:
            self.upstream.labels(tenant, model, protocol).observe(upstream_s)
