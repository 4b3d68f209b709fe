"""Two `control-plane serve` processes on one Postgres and one Triton: exactly one reconciles; killing it
hands the loop over within the lock timeout; started again on the same settings, it serves the same alias."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from control_plane.db import migrate
from control_plane.settings import Settings
from control_plane.tritonserver import TritonClient
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.fixtures_triton import StartTriton
from tests.fleet.traffic import wait_until
from tests.support import procs
from tests.support.api import ADMIN_TOKEN, Api
from tests.support.deploy import Deployed, deploy_onnx

LOCK_TIMEOUT_S = 5.0
INTERVAL_S = 0.5
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@contextmanager
def control_plane(env: dict[str, str], log: Path) -> Iterator[tuple[httpx.Client, Any]]:
    """`control-plane serve` on a free port until the block ends (its process, for SIGKILL)."""
    proc, port = procs.start_control_plane(env, log=log)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, proc
    finally:
        procs.stop(proc)


def leader(client: httpx.Client) -> bool | None:
    """What the process says about its leadership (None if it does not answer)."""
    try:
        body = client.get("/v1/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()
    except httpx.HTTPError:
        return None
    return bool(body["reconciler"]["leader"])


def serves(client: httpx.Client, deployed: Deployed) -> bool:
    headers = {"Authorization": f"Bearer {deployed.consumer_key}"}
    return client.post(f"/v2/models/{deployed.model}/infer", json=BODY, headers=headers).status_code == 200


def test_one_of_two_processes_reconciles_a_killed_leader_hands_over_and_a_restart_serves(
    create_database: Callable[[], str], s3_endpoint: str, start_triton: StartTriton, tmp_path: Path
) -> None:
    database_url = create_database()
    migrate.upgrade(database_url)
    (tmp_path / "repository").mkdir()
    triton = start_triton(repository=tmp_path / "repository")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
    env.update(
        CP_DATABASE_URL=database_url,
        CP_ARTIFACT_STORE="s3",
        CP_S3_ENDPOINT=s3_endpoint,
        CP_S3_ACCESS_KEY=S3_ACCESS_KEY,
        CP_S3_SECRET_KEY=S3_SECRET_KEY,
        CP_S3_BUCKET=f"failover-{os.getpid()}-{int(time.time())}",
        CP_MODEL_REPOSITORY=str(tmp_path / "repository"),
        CP_TRITON_URLS=triton.http_url,
        CP_TRITON_GRPC_URLS=triton.process.grpc_url,
        CP_TRITON_NAMES="shared",
        CP_ADMIN_TOKEN=ADMIN_TOKEN,
        CP_GRPC_PORT="0",
        CP_RECONCILE_INTERVAL_S=str(INTERVAL_S),
        CP_LEADER_LOCK_TIMEOUT_S=str(LOCK_TIMEOUT_S),
    )
    with ExitStack() as stack:
        first, first_proc = stack.enter_context(control_plane(env, tmp_path / "first.log"))
        wait_until(lambda: leader(first) is True, timeout=10)
        second, _ = stack.enter_context(control_plane(env, tmp_path / "second.log"))
        api = Api(first, admin_token=ADMIN_TOKEN, settings=Settings(), app=object())  # type: ignore[arg-type]
        deployed = deploy_onnx(api, tmp_path)
        wait_until(lambda: serves(second, deployed), timeout=10)
        for _ in range(10):  # exactly one leader, whenever asked
            assert (leader(first), leader(second)) == (True, False)
            time.sleep(INTERVAL_S / 2)

        os.kill(first_proc.pid, signal.SIGKILL)
        first_proc.wait()
        handed_over_s = wait_until(lambda: leader(second) is True, timeout=LOCK_TIMEOUT_S, every=0.05)
        with TritonClient.from_url(triton.http_url, timeout_s=30) as client:
            client.unload_model(deployed.triton_name)  # only a reconciling process puts it back
        repaired_s = wait_until(lambda: serves(second, deployed), timeout=INTERVAL_S + 10)

        again, _ = stack.enter_context(control_plane(env, tmp_path / "again.log"))
        assert serves(again, deployed), "started again on the same settings: the alias serves, nothing to do"
        assert (leader(again), leader(second)) == (False, True)
    print(
        f"\nleader SIGKILLed: the other process leads after {handed_over_s:.2f} s "
        f"(lock timeout {LOCK_TIMEOUT_S} s) and repaired drift {repaired_s:.2f} s later"
    )
