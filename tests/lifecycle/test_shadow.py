"""Shadow traffic end to end: live answers unchanged, comparison statistics reflect the shadow model."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tests.support.api import Api
from tests.support.deploy import deploy_onnx

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)
BODY = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.reshape(-1).tolist()}]}


def _settled_stats(api: Api, alias: str, *, expected: int) -> dict[str, Any]:
    """Shadow statistics once `expected` mirrored requests were all compared (that runs after the reply)."""
    deadline = time.monotonic() + 15
    while True:
        stats: dict[str, Any] = api.client.get(alias + "/traffic", headers=api.headers()).json()[
            "shadow_stats"
        ]
        done = stats["matches"] + stats["mismatches"] + stats["errors"]
        if (stats["requests"] >= expected and done == stats["requests"]) or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def test_shadow_compares_without_touching_live_answers(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_served()
    live = deploy_onnx(api, tmp_path, seed=0)
    different = deploy_onnx(api, tmp_path, tenant=live.tenant, seed=5, alias="shadow-a")
    identical = deploy_onnx(api, tmp_path, tenant=live.tenant, seed=0, alias="shadow-b")
    alias = f"/v1/tenants/{live.tenant}/models/{live.model}/aliases/production"
    headers = {"Authorization": f"Bearer {live.consumer_key}"}

    def infer() -> list[list[float]]:
        response = api.client.post(f"/v2/models/{live.model}/infer", json=BODY, headers=headers)
        assert response.status_code == 200
        assert response.json()["model_version"] == str(live.version)
        return list(response.json()["outputs"][0]["data"])

    baseline = infer()
    shadowed = api.client.put(
        alias + "/traffic",
        json={"shadow": {"version": different.version, "percent": 100}},
        headers=api.headers(),
    )
    assert shadowed.status_code == 200, shadowed.text
    answers = [infer() for _ in range(30)]
    assert all(a == baseline for a in answers)  # live answers unchanged
    stats = _settled_stats(api, alias, expected=30)
    assert stats["shadow_version"] == different.version
    assert stats["requests"] == 30
    assert (stats["matches"], stats["mismatches"], stats["errors"]) == (0, 30, 0)
    assert stats["match_rate"] == 0.0
    assert stats["max_abs_diff"] > 1e-3

    switched = api.client.put(
        alias + "/traffic",
        json={"shadow": {"version": identical.version, "percent": 100}},
        headers=api.headers(),
    )
    assert switched.status_code == 200
    for _ in range(20):
        infer()
    stats = _settled_stats(api, alias, expected=20)
    assert (stats["shadow_version"], stats["requests"], stats["matches"]) == (identical.version, 20, 20)
    assert stats["match_rate"] == 1.0
    assert stats["max_abs_diff"] <= 1e-5
    metrics = api.client.get("/metrics", headers=api.headers()).text
    assert (
        f'cp_shadow_requests_total{{alias="production",model="{live.model}",outcome="mismatch",'
        f'shadow_version="{different.version}",tenant="{live.tenant}"}} 30.0'
    ) in metrics
