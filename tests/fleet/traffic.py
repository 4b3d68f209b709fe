"""Client load for fleet tests: HTTP (the fast path) and gRPC threads that record every outcome."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException

from tests.support.deploy import Deployed

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
TIMEOUT_S = 10.0


def _http(base_url: str, deployed: Deployed, stop: threading.Event, outcomes: Counter[str]) -> None:
    headers = {"Authorization": f"Bearer {deployed.consumer_key}"}
    with httpx.Client(base_url=base_url, timeout=TIMEOUT_S) as client:
        while not stop.is_set():
            try:
                response = client.post(f"/v2/models/{deployed.model}/infer", json=BODY, headers=headers)
                outcomes["ok" if response.status_code == 200 else f"http {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                outcomes[f"http {type(exc).__name__}"] += 1
            time.sleep(0.005)


def _grpc(address: str, deployed: Deployed, stop: threading.Event, outcomes: Counter[str]) -> None:
    headers = {"authorization": f"Bearer {deployed.consumer_key}"}
    x = triton_grpc.InferInput("x", [1, 4], "FP32")
    x.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    with triton_grpc.InferenceServerClient(address) as client:
        while not stop.is_set():
            try:
                client.infer(deployed.model, [x], headers=headers, client_timeout=TIMEOUT_S)
                outcomes["ok"] += 1
            except InferenceServerException as exc:
                outcomes[f"grpc {exc.status()}"] += 1
            time.sleep(0.005)


@contextmanager
def load(
    base_url: str, grpc_address: str | None, deployed: Deployed, *, http_threads: int = 3
) -> Iterator[Counter[str]]:
    """Requests to `deployed` in a loop while the block runs; yields the outcomes, complete after it."""
    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    threads = [
        threading.Thread(target=_http, args=(base_url, deployed, stop, outcomes)) for _ in range(http_threads)
    ]
    if grpc_address is not None:
        threads.append(threading.Thread(target=_grpc, args=(grpc_address, deployed, stop, outcomes)))
    for thread in threads:
        thread.start()
    try:
        yield outcomes
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=TIMEOUT_S * 2)
    assert not any(t.is_alive() for t in threads), "a request hung"


def wait_until(condition: object, *, timeout: float, every: float = 0.1) -> float:
    """Poll `condition()` until it is true; the seconds it took (AssertionError on timeout)."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s: {condition}")
        time.sleep(every)
    return time.monotonic() - started
