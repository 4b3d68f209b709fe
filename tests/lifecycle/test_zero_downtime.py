"""Eight clients for over 20 s through the proxy while an admin promotes, rolls back, sets a 50/50 canary."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.api import Api
from tests.support.deploy import deploy_onnx

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}
CLIENTS = 8


@dataclass(frozen=True)
class Sample:
    sent: float
    received: float
    status: int
    version: str | None


def _load(api: Api, model: str, key: str, stop: threading.Event, out: list[Sample]) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api.client.base_url, timeout=30) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = client.post(f"/v2/models/{model}/infer", json=BODY, headers=headers)
                status, version = response.status_code, response.json().get("model_version")
            except httpx.HTTPError:
                status, version = -1, None
            out.append(Sample(sent, time.monotonic(), status, version))


def _timed(action: Callable[[], httpx.Response]) -> tuple[float, float]:
    began = time.monotonic()
    response = action()
    assert response.status_code == 200, response.text
    return began, time.monotonic()


def test_promote_rollback_and_canary_under_load_lose_nothing(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_served()
    v1 = deploy_onnx(api, tmp_path)
    v2 = deploy_onnx(api, tmp_path, tenant=v1.tenant, out_features=5, seed=1, alias="staging")
    alias = f"/v1/tenants/{v1.tenant}/models/{v1.model}/aliases/production"
    samples: list[Sample] = []
    stop = threading.Event()
    workers = [
        threading.Thread(target=_load, args=(api, v1.model, v1.consumer_key, stop, samples))
        for _ in range(CLIENTS)
    ]
    start = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        time.sleep(4)
        promote = _timed(lambda: api.client.put(alias, json={"version": v2.version}, headers=api.headers()))
        time.sleep(5)
        rollback = _timed(lambda: api.client.post(alias + "/rollback", headers=api.headers()))
        time.sleep(5)
        canary_body = {"routes": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}
        canary = _timed(lambda: api.client.put(alias + "/traffic", json=canary_body, headers=api.headers()))
        time.sleep(max(0.0, 21 - (time.monotonic() - start)))
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    duration = time.monotonic() - start
    failed = [s for s in samples if s.status != 200]
    print(f"\n{len(samples)} requests from {CLIENTS} clients in {duration:.1f} s, {len(failed)} failed")
    assert duration >= 20
    assert failed == []

    def versions(after: float, before: float) -> list[str | None]:
        return [s.version for s in samples if s.sent > after and s.received < before]

    assert set(versions(start, promote[0])) == {"1"}
    assert set(versions(promote[1], rollback[0])) == {"2"}
    assert set(versions(rollback[1], canary[0])) == {"1"}
    split = versions(canary[1], math.inf)
    share = split.count("2") / len(split)
    bound = 4 * math.sqrt(0.25 / len(split))  # four standard deviations of a fair coin
    print(f"canary: {len(split)} requests, {share:.3f} to version 2 (allowed 0.5 +- {bound:.3f})")
    assert set(split) == {"1", "2"}
    assert abs(share - 0.5) <= bound


def test_canary_is_sticky_per_routing_key(make_served: Callable[..., Api], tmp_path: Path) -> None:
    api = make_served()
    v1 = deploy_onnx(api, tmp_path)
    v2 = deploy_onnx(api, tmp_path, tenant=v1.tenant, out_features=5, seed=1, alias="staging")
    alias = f"/v1/tenants/{v1.tenant}/models/{v1.model}/aliases/production"
    body = {"routes": [{"version": 1, "weight": 70}, {"version": v2.version, "weight": 30}]}
    traffic = api.client.put(alias + "/traffic", json=body, headers=api.headers())
    assert traffic.status_code == 200, traffic.text
    assert traffic.json()["routes"] == body["routes"]

    def version_for(key: str) -> str:
        headers = {"Authorization": f"Bearer {v1.consumer_key}", "X-Routing-Key": key}
        response = api.client.post(f"/v2/models/{v1.model}/infer", json=BODY, headers=headers)
        assert response.status_code == 200
        return str(response.json()["model_version"])

    by_user = {f"user-{i}": version_for(f"user-{i}") for i in range(200)}
    assert all(version_for(user) == version for user, version in list(by_user.items())[:40])
    share = sum(1 for v in by_user.values() if v == "2") / len(by_user)
    assert 0.15 < share < 0.45

    promoted = api.client.put(alias, json={"version": 1}, headers=api.headers())
    assert promoted.status_code == 200
    assert (
        api.client.get(alias + "/traffic", headers=api.headers()).json()["routes"] == []
    )  # promotion clears it
    assert {version_for(f"user-{i}") for i in range(20)} == {"1"}


def test_traffic_rejects_bad_splits(api: Api, tmp_path: Path) -> None:
    v1 = deploy_onnx(api, tmp_path)
    alias = f"/v1/tenants/{v1.tenant}/models/{v1.model}/aliases/production"
    uneven = api.client.put(
        alias + "/traffic", json={"routes": [{"version": 1, "weight": 60}]}, headers=api.headers()
    )
    assert uneven.status_code == 422
    assert "add up to 100" in uneven.json()["detail"]
    unknown = {"routes": [{"version": 1, "weight": 50}, {"version": 9, "weight": 50}]}
    assert api.client.put(alias + "/traffic", json=unknown, headers=api.headers()).status_code == 404
    missing_alias = api.client.put(
        f"/v1/tenants/{v1.tenant}/models/{v1.model}/aliases/nope/traffic",
        json={"routes": []},
        headers=api.headers(),
    )
    assert missing_alias.status_code == 404
