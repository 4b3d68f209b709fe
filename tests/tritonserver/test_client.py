"""TritonClient against the real bundled Triton and against servers that do not answer."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from control_plane.tritonserver import (
    TritonClient,
    TritonLoadTimeout,
    TritonModelLoadError,
    TritonModelNotFound,
    TritonUnavailable,
    free_port,
)
from tests.fixtures_triton import RunningTriton
from tests.support.triton_models import infer, write_python_model


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _repository(triton: RunningTriton) -> Path:
    assert triton.repository is not None
    return triton.repository


def test_load_failure_carries_tritons_message_and_other_models_still_load(triton: RunningTriton) -> None:
    broken, good = _name("broken"), _name("good")
    write_python_model(_repository(triton), broken, fail_on_init="deliberately broken model")
    write_python_model(_repository(triton), good, scale=3.0)

    with pytest.raises(TritonModelLoadError) as caught:
        triton.client.load_model(broken)
    assert "deliberately broken model" in caught.value.message
    assert broken in caught.value.message
    assert caught.value.status_code == 400
    assert not triton.client.is_model_ready(broken)

    assert triton.client.is_ready(), "a failed model load must not make the server unready"
    triton.client.load_model(good)
    np.testing.assert_allclose(infer(triton.http_url, good, [1.0, 2.0]), [3.0, 6.0])
    triton.client.unload_model(good)


def test_broken_config_and_unknown_model_fail_to_load(triton: RunningTriton) -> None:
    bad_config = _name("badcfg")
    write_python_model(_repository(triton), bad_config, config='name: "x" backend: ')
    with pytest.raises(TritonModelLoadError, match="failed to poll from model repository"):
        triton.client.load_model(bad_config)
    with pytest.raises(TritonModelLoadError, match="failed to poll from model repository"):
        triton.client.load_model(_name("absent"))


def test_model_config_index_and_not_found(triton: RunningTriton) -> None:
    name = _name("cfg")
    write_python_model(_repository(triton), name)
    triton.client.load_model(name)
    config = triton.client.model_config(name)
    assert config["name"] == name and config["backend"] == "python"
    assert config["input"][0]["name"] == "INPUT0"
    assert {"name": name, "version": "1", "state": "READY"} in triton.client.repository_index()
    triton.client.unload_model(name)

    with pytest.raises(TritonModelNotFound, match="unknown model"):
        triton.client.model_config(_name("nowhere"))
    assert not triton.client.is_model_ready(_name("nowhere"))
    triton.client.unload_model(_name("nowhere"))  # Triton: not an error


def test_one_client_serves_concurrent_threads(triton: RunningTriton) -> None:
    names = [_name("par") for _ in range(3)]
    for name in names:
        write_python_model(_repository(triton), name)
    executor = ThreadPoolExecutor(max_workers=6)
    try:
        loads = [executor.submit(triton.client.load_model, name) for name in names]
        checks = [executor.submit(triton.client.is_ready) for _ in range(12)]
        assert all(f.result(timeout=60) for f in checks)
        for f in loads:
            f.result(timeout=60)
        assert all(triton.client.is_model_ready(name) for name in names)
    finally:
        executor.shutdown(wait=False)
    for name in names:
        triton.client.unload_model(name)


def test_closed_port_is_unready_and_load_raises_unavailable_quickly() -> None:
    client = TritonClient.from_url(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    started = time.monotonic()
    assert client.is_ready() is False
    assert client.is_live() is False
    with pytest.raises(TritonUnavailable) as caught:
        client.load_model("anything")
    assert caught.value.status_code == 503 and caught.value.retry_after == 1
    with pytest.raises(TritonUnavailable):
        client.is_model_ready("anything")
    assert time.monotonic() - started < 2
    client.close()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def test_silent_server_times_out_as_unavailable(silent_server: int) -> None:
    client = TritonClient.from_url(f"127.0.0.1:{silent_server}", timeout_s=0.5)
    started = time.monotonic()
    assert client.is_ready() is False
    with pytest.raises(TritonLoadTimeout, match=r"the load did not finish within 0\.5 s") as caught:
        client.load_model("anything")  # said in the model's terms: the reason is not Triton's address
    assert isinstance(caught.value, TritonUnavailable) and "127.0.0.1" not in caught.value.message
    assert time.monotonic() - started < 5
    client.close()
