"""Loads over gRPC: same results as over HTTP, and a slow load holds up no HTTP connection of Triton."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import tritonclient.http as triton_http

from control_plane.tritonserver import TritonClient, TritonModelLoadError, TritonUnavailable, free_port
from tests.fixtures_triton import RunningTriton, StartTriton
from tests.support.triton_models import infer, write_python_model

SLOW = ("slow1", "slow2")  # models whose initialize() takes 3 s


def _grpc_client(triton: RunningTriton) -> TritonClient:
    return TritonClient.from_url(triton.http_url, timeout_s=60, grpc_url=triton.process.grpc_url)


def test_load_unload_and_failures_over_grpc(triton: RunningTriton) -> None:
    assert triton.repository is not None
    good, broken = f"good-{uuid.uuid4().hex[:8]}", f"broken-{uuid.uuid4().hex[:8]}"
    write_python_model(triton.repository, good, scale=4.0)
    write_python_model(triton.repository, broken, fail_on_init="deliberately broken model")
    with _grpc_client(triton) as client:
        client.load_model(good)
        assert client.is_model_ready(good)
        assert list(infer(triton.http_url, good, [1.0])) == [4.0]
        with pytest.raises(TritonModelLoadError) as caught:
            client.load_model(broken)
        assert "deliberately broken model" in caught.value.message and broken in caught.value.message
        client.unload_model(good)
        client.unload_model(f"never-{uuid.uuid4().hex[:8]}")  # unknown: not an error, as over HTTP
    deadline = time.monotonic() + 10
    while triton.client.is_model_ready(good) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not triton.client.is_model_ready(good)


def test_an_unreachable_grpc_endpoint_is_unavailable_at_once() -> None:
    port = free_port()
    client = TritonClient.from_url(f"http://127.0.0.1:{port}", timeout_s=30, grpc_url=f"127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(TritonUnavailable):
        client.load_model("anything")
    assert time.monotonic() - started < 5
    client.close()


def test_slow_loads_over_grpc_hold_up_no_http_connection(start_triton: StartTriton, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    for name in SLOW:
        write_python_model(repository, name)
        source = repository / name / "1" / "model.py"
        source.write_text(source.read_text().replace("        pass", "        import time; time.sleep(3)"))
    running = start_triton(repository=repository)
    host = running.http_url.split("://", 1)[1]
    slowest, answered = [0.0], [0]
    ready, done = threading.Event(), threading.Event()

    def watch() -> None:
        # Keep-alive connections over all of Triton's HTTP worker threads, as the data plane's pool
        # has (gevent-based clients must live in the thread that uses them).
        probes = [triton_http.InferenceServerClient(host, network_timeout=30) for _ in range(16)]
        for probe in probes:
            probe.is_server_ready()
        ready.set()
        while not done.is_set():
            for probe in probes:
                started = time.monotonic()
                assert probe.is_server_ready()
                slowest[0] = max(slowest[0], time.monotonic() - started)
                answered[0] += 1
        for probe in probes:
            probe.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert ready.wait(30)
    try:
        with TritonClient.from_url(
            running.http_url, timeout_s=60, grpc_url=running.process.grpc_url
        ) as client:
            started = time.monotonic()
            loads = [threading.Thread(target=client.load_model, args=(name,)) for name in SLOW]
            for load in loads:
                load.start()
            for load in loads:
                load.join()
            assert time.monotonic() - started >= 3
            assert all(client.is_model_ready(name) for name in SLOW)
    finally:
        done.set()
        watcher.join()
    assert slowest[0] < 1.0, f"an HTTP request waited {slowest[0]:.2f} s for a load to finish"
    assert answered[0] > 50, "the probes kept running during the loads"
