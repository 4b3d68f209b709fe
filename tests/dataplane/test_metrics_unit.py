"""Unit tests of the data-plane metrics collector (no servers)."""

from __future__ import annotations

import re
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from control_plane.dataplane.metrics import BUCKETS, DataPlaneMetrics

REQ = "cp_inference_requests_total"
LAT = "cp_inference_request_seconds"
UP = "cp_inference_upstream_seconds"

# (tenant, model, version, protocol, status, total_s, upstream_s)
Observation = tuple[str, str, str, str, int | str, float, float | None]
OBSERVATIONS: list[Observation] = [
    ("acme", "resnet", "1", "http", 200, 0.003, 0.002),
    ("acme", "resnet", "1", "http", 200, 0.01, 0.0005),  # both exactly on a bound
    ("acme", "resnet", "2", "http", 200, 0.2, 0.15),
    ("acme", "resnet", "2", "http", 503, 0.0001, None),  # failed before reaching Triton
    ("acme", "resnet", "1", "grpc", "200", 42.0, 41.5),  # above the last bound: only +Inf
    ("globex", "bert", "3", "http", 404, 0.0004, None),
    ("globex", "bert", "3", "http", "404", 0.0007, None),  # str status: same series as 404
    ("globex", "bert", "3", "grpc", 200, 10.0, 9.9999),
]


def _feed(metrics: DataPlaneMetrics, observations: list[Observation] = OBSERVATIONS) -> None:
    for tenant, model, version, protocol, status, total_s, upstream_s in observations:
        metrics.observe(
            tenant=tenant,
            model=model,
            version=version,
            protocol=protocol,
            status=status,
            total_s=total_s,
            upstream_s=upstream_s,
        )


def _bucket(registry: CollectorRegistry, name: str, labels: dict[str, str], le: str) -> float | None:
    return registry.get_sample_value(f"{name}_bucket", {**labels, "le": le})


def test_counter_by_tenant_model_version_protocol_status() -> None:
    metrics = DataPlaneMetrics()
    _feed(metrics)
    get = metrics.registry.get_sample_value

    def labels(tenant: str, model: str, version: str, protocol: str, status: str) -> dict[str, str]:
        return {"tenant": tenant, "model": model, "version": version, "protocol": protocol, "status": status}

    assert get(REQ, labels("acme", "resnet", "1", "http", "200")) == 2.0
    assert get(REQ, labels("acme", "resnet", "2", "http", "200")) == 1.0
    assert get(REQ, labels("acme", "resnet", "2", "http", "503")) == 1.0
    assert get(REQ, labels("acme", "resnet", "1", "grpc", "200")) == 1.0
    assert get(REQ, labels("globex", "bert", "3", "http", "404")) == 2.0  # 404 and "404" together
    assert get(REQ, labels("globex", "bert", "3", "grpc", "200")) == 1.0
    assert get(REQ, labels("globex", "bert", "3", "http", "200")) is None
    # Exactly one exported series per label set, even though 404 and "404" were both passed.
    samples = [s for f in metrics.registry.collect() for s in f.samples if s.name == REQ]
    assert len(samples) == 6


def test_histograms_aggregate_over_versions_and_statuses() -> None:
    metrics = DataPlaneMetrics()
    _feed(metrics)
    reg = metrics.registry
    acme_http = {"tenant": "acme", "model": "resnet", "protocol": "http"}

    # Latency of acme/resnet/http: 0.003, 0.01, 0.2, 0.0001 (versions 1 and 2, statuses 200 and 503).
    assert _bucket(reg, LAT, acme_http, "0.0005") == 1.0
    assert _bucket(reg, LAT, acme_http, "0.0025") == 1.0
    assert _bucket(reg, LAT, acme_http, "0.005") == 2.0
    assert _bucket(reg, LAT, acme_http, "0.01") == 3.0  # 0.01 is on the bound: le is inclusive
    assert _bucket(reg, LAT, acme_http, "0.1") == 3.0
    assert _bucket(reg, LAT, acme_http, "0.25") == 4.0
    assert _bucket(reg, LAT, acme_http, "10.0") == 4.0
    assert _bucket(reg, LAT, acme_http, "+Inf") == 4.0
    assert reg.get_sample_value(f"{LAT}_count", acme_http) == 4.0
    assert reg.get_sample_value(f"{LAT}_sum", acme_http) == pytest.approx(0.2131)

    # Upstream of acme/resnet/http: the 503 had no upstream time, so 3 observations.
    assert _bucket(reg, UP, acme_http, "0.0005") == 1.0  # 0.0005 exactly on the first bound
    assert _bucket(reg, UP, acme_http, "0.001") == 1.0
    assert _bucket(reg, UP, acme_http, "0.0025") == 2.0
    assert _bucket(reg, UP, acme_http, "0.25") == 3.0
    assert reg.get_sample_value(f"{UP}_count", acme_http) == 3.0
    assert reg.get_sample_value(f"{UP}_sum", acme_http) == pytest.approx(0.1525)

    # Above the last bound: only the +Inf bucket has it.
    acme_grpc = {"tenant": "acme", "model": "resnet", "protocol": "grpc"}
    assert _bucket(reg, LAT, acme_grpc, "10.0") == 0.0
    assert _bucket(reg, LAT, acme_grpc, "+Inf") == 1.0
    assert reg.get_sample_value(f"{LAT}_sum", acme_grpc) == 42.0

    # On the last bound: in the 10.0 bucket.
    globex_grpc = {"tenant": "globex", "model": "bert", "protocol": "grpc"}
    assert _bucket(reg, LAT, globex_grpc, "5.0") == 0.0
    assert _bucket(reg, LAT, globex_grpc, "10.0") == 1.0

    # Every bucket bound is exported, plus +Inf, and no other.
    les = {
        s.labels["le"]
        for f in reg.collect()
        for s in f.samples
        if s.name == f"{LAT}_bucket" and s.labels["tenant"] == "acme" and s.labels["protocol"] == "http"
    }
    assert les == {*(str(b) for b in BUCKETS), "+Inf"}


def test_upstream_histogram_skipped_without_upstream_time() -> None:
    metrics = DataPlaneMetrics()
    _feed(metrics)
    reg = metrics.registry
    globex_http = {"tenant": "globex", "model": "bert", "protocol": "http"}
    assert reg.get_sample_value(f"{LAT}_count", globex_http) == 2.0
    assert reg.get_sample_value(f"{UP}_count", globex_http) is None  # never observed: no series at all
    assert _bucket(reg, UP, globex_http, "+Inf") is None


def test_in_flight_gauge_http_and_grpc() -> None:
    metrics = DataPlaneMetrics()
    get = metrics.registry.get_sample_value
    assert get("cp_inference_in_flight", {"protocol": "http"}) == 0.0  # exported from the start
    assert get("cp_inference_in_flight", {"protocol": "grpc"}) is None  # until someone asks for it

    grpc = metrics.in_flight.labels("grpc")
    assert metrics.in_flight.labels("grpc") is grpc
    assert metrics.in_flight.labels("http") is metrics.http_in_flight
    metrics.http_in_flight.inc()
    metrics.http_in_flight.inc()
    grpc.inc()
    assert get("cp_inference_in_flight", {"protocol": "http"}) == 2.0
    assert get("cp_inference_in_flight", {"protocol": "grpc"}) == 1.0
    metrics.http_in_flight.dec()
    grpc.dec()
    assert get("cp_inference_in_flight", {"protocol": "http"}) == 1.0
    assert get("cp_inference_in_flight", {"protocol": "grpc"}) == 0.0


def test_exposition_has_type_lines() -> None:
    metrics = DataPlaneMetrics()
    _feed(metrics)
    text = generate_latest(metrics.registry).decode()
    assert "# TYPE cp_inference_requests_total counter" in text
    assert "# TYPE cp_inference_request_seconds histogram" in text
    assert "# TYPE cp_inference_upstream_seconds histogram" in text
    assert "# TYPE cp_inference_in_flight gauge" in text
    series = 'model="resnet",protocol="http",status="200",tenant="acme",version="1"'
    assert f"cp_inference_requests_total{{{series}}} 2.0" in text


def test_names_clash_with_another_collector_is_refused() -> None:
    metrics = DataPlaneMetrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("cp_inference_requests", "clash", registry=metrics.registry)


def _reference(observations: list[Observation]) -> CollectorRegistry:
    """prometheus_client's own metrics, fed the same requests."""
    registry = CollectorRegistry()
    requests = Counter(
        "cp_inference_requests_total",
        "Inference requests by outcome",
        ["tenant", "model", "version", "protocol", "status"],
        registry=registry,
    )
    latency = Histogram(
        "cp_inference_request_seconds",
        "Whole request time in the control plane",
        ["tenant", "model", "protocol"],
        buckets=BUCKETS,
        registry=registry,
    )
    upstream = Histogram(
        "cp_inference_upstream_seconds",
        "Time waiting for Triton",
        ["tenant", "model", "protocol"],
        buckets=BUCKETS,
        registry=registry,
    )
    in_flight = Gauge("cp_inference_in_flight", "Requests being served", ["protocol"], registry=registry)
    in_flight.labels("http").inc()
    in_flight.labels("grpc")
    for tenant, model, version, protocol, status, total_s, upstream_s in observations:
        requests.labels(tenant, model, version, protocol, str(status)).inc()
        latency.labels(tenant, model, protocol).observe(total_s)
        if upstream_s is not None:
            upstream.labels(tenant, model, protocol).observe(upstream_s)
    return registry


def _without_created_values(text: bytes) -> str:
    """The text with the values of `_created` samples blanked (they are creation timestamps)."""
    return re.sub(r"^(\S+_created\{.*\}) \S+$", r"\1 T", text.decode(), flags=re.MULTILINE)


@pytest.mark.parametrize("count", [0, 1, len(OBSERVATIONS)])
def test_exposition_matches_prometheus_client(count: int) -> None:
    observations = OBSERVATIONS[:count]
    metrics = DataPlaneMetrics()
    metrics.http_in_flight.inc()
    metrics.in_flight.labels("grpc")
    _feed(metrics, observations)

    ours = _without_created_values(generate_latest(metrics.registry))
    theirs = _without_created_values(generate_latest(_reference(observations)))
    assert ours == theirs  # _created series included, as prometheus_client has them (or not)


def test_sample_values_match_prometheus_client_exactly() -> None:
    metrics = DataPlaneMetrics()
    metrics.http_in_flight.inc()
    metrics.in_flight.labels("grpc")
    _feed(metrics)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.endswith("_created")
        }

    def created(registry: CollectorRegistry) -> set[tuple[str, frozenset[tuple[str, str]]]]:
        return {
            (s.name, frozenset(s.labels.items()))
            for family in registry.collect()
            for s in family.samples
            if s.name.endswith("_created")
        }

    ours, theirs = samples(metrics.registry), samples(_reference(OBSERVATIONS))
    assert ours == theirs  # exact float equality, sums included
    # 6 counter series, 4 latency + 3 upstream histogram series (buckets, +Inf, _count, _sum), 2 gauges
    assert len(ours) == 6 + (4 + 3) * (len(BUCKETS) + 3) + 2
    assert created(metrics.registry) == created(_reference(OBSERVATIONS))


def test_collect_survives_series_added_during_scrape() -> None:
    metrics = DataPlaneMetrics()
    stop = threading.Event()
    failures: list[BaseException] = []

    def scrape() -> None:
        try:
            while not stop.is_set():
                generate_latest(metrics.registry)
        except BaseException as exc:  # a scrape that fails must fail the test, not just end its thread
            failures.append(exc)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        for i in range(3000):
            metrics.observe(
                tenant=f"t{i % 50}",
                model=f"m{i}",
                version="1",
                protocol="http",
                status=200,
                total_s=0.001,
                upstream_s=0.0005,
            )
    finally:
        stop.set()
        scraper.join()
    assert failures == []
    assert metrics.registry.get_sample_value(
        f"{LAT}_count", {"tenant": "t7", "model": "m7", "protocol": "http"}
    )
