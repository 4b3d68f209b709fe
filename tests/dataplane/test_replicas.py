"""Two control-plane processes on one Postgres: a change through one is served by the other within 1 s."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.api import Api
from tests.support.deploy import deploy_onnx
from tests.support.procs import start_control_plane, stop

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}


@pytest.fixture
def second_process(make_served: Callable[..., Api], tmp_path: Path) -> Iterator[tuple[Api, httpx.Client]]:
    """App A in this process, app B as a separate `control-plane serve` process on the same registry."""
    first = make_served()
    s = first.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
    env.update(
        CP_DATABASE_URL=s.database_url,
        CP_ARTIFACT_STORE="s3",
        CP_S3_ENDPOINT=s.s3_endpoint,
        CP_S3_ACCESS_KEY=s.s3_access_key.get_secret_value(),
        CP_S3_SECRET_KEY=s.s3_secret_key.get_secret_value(),
        CP_S3_BUCKET=s.s3_bucket,
        CP_MODEL_REPOSITORY=s.model_repository,
        CP_TRITON_URLS=",".join(s.triton_urls),
        CP_ADMIN_TOKEN=first.admin_token,
        CP_GRPC_PORT="0",
    )
    proc, port = start_control_plane(env, log=tmp_path / "replica.log")
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield first, client
    finally:
        stop(proc, timeout=30)


def test_alias_change_through_one_process_is_served_by_the_other_within_1s(
    second_process: tuple[Api, httpx.Client], tmp_path: Path
) -> None:
    first, replica = second_process
    v1 = deploy_onnx(first, tmp_path)
    v2 = deploy_onnx(first, tmp_path, tenant=v1.tenant, out_features=5, seed=1, alias="staging")
    headers = {"Authorization": f"Bearer {v1.consumer_key}"}
    url = f"/v2/models/{v1.model}/infer"

    def served_version() -> str:
        response = replica.post(url, json=BODY, headers=headers)
        assert response.status_code == 200, response.text
        return str(response.json()["model_version"])

    deadline = time.monotonic() + 10
    while served_version() != str(v1.version):  # the replica may still be reading the registry
        assert time.monotonic() < deadline

    moved = first.client.put(
        f"/v1/tenants/{v1.tenant}/models/{v1.model}/aliases/production",
        json={"version": v2.version},
        headers=first.headers(),
    )
    assert moved.status_code == 200
    started = time.monotonic()
    while served_version() != str(v2.version):
        assert time.monotonic() - started < 1.0, "the other process still routes to the old version after 1 s"
        time.sleep(0.01)
    elapsed_ms = (time.monotonic() - started) * 1000
    print(f"\nalias change visible in the other process after {elapsed_ms:.1f} ms")
