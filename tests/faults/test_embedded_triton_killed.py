"""Fault: the embedded Triton is SIGKILLed under load; requests never hang, and it all comes back."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx

from control_plane.db import migrate
from control_plane.tritonserver.supervisor import SupervisorState
from tests.support.api import ADMIN_TOKEN, Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.tritonserver.procfs import group_members, stubs_of

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}
CLIENT_TIMEOUT_S = 5.0


def _infer(client: httpx.Client, deployed: Deployed) -> httpx.Response:
    return client.post(
        f"/v2/models/{deployed.model}/infer",
        json=BODY,
        headers={"Authorization": f"Bearer {deployed.consumer_key}"},
    )


def _outcome(client: httpx.Client, deployed: Deployed) -> str:
    """ok, 503+retry-after, or what else happened (a timeout means a hang)."""
    try:
        response = _infer(client, deployed)
    except httpx.TimeoutException:
        return "timeout"
    if response.status_code == 200:
        return "ok"
    if response.status_code == 503 and response.headers.get("retry-after"):
        return "503+retry-after"
    return f"{response.status_code}: {response.text[:200]}"


def _load(base_url: str, deployed: list[Deployed], stop: threading.Event, outcomes: Counter[str]) -> None:
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        turn = 0
        while not stop.is_set():
            outcomes[_outcome(client, deployed[turn % len(deployed)])] += 1
            turn += 1
            time.sleep(0.01)


def _probe_health(base_url: str, stop: threading.Event, took: list[float]) -> None:
    """/v2/health/ready and /v1/status must answer quickly all along."""
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        while not stop.is_set():
            for path in ("/v2/health/ready", "/v1/status"):
                started = time.monotonic()
                client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                took.append(time.monotonic() - started)
            time.sleep(0.05)


def test_requests_get_503_or_succeed_and_every_alias_serves_again_within_15_s(
    make_served: Callable[..., Api], create_database: Callable[[], str], tmp_path: Path
) -> None:
    database_url = create_database()
    migrate.upgrade(database_url)
    api = make_served(
        database_url=database_url,
        triton_urls=[],
        triton_embedded=True,
        model_repository=str(tmp_path / "repository"),
        triton_workdir=str(tmp_path / "triton"),
        reconcile_interval_s=2.0,
    )
    deployed = [deploy_onnx(api, tmp_path, seed=seed) for seed in (1, 2, 3)]
    base_url = str(api.client.base_url)
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        assert all(_infer(client, d).status_code == 200 for d in deployed)
    supervisor = api.state.supervisor
    assert supervisor is not None
    old_pid = supervisor.process.pid
    assert old_pid is not None and stubs_of(old_pid)
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "1")  # CP_TRITON_STUB_BLAS_THREADS, unless set here
    assert {_environ(s.pid).get("OPENBLAS_NUM_THREADS") for s in stubs_of(old_pid)} == {blas}

    stop = threading.Event()
    outcomes: Counter[str] = Counter()
    slowest: list[float] = []
    threads = [threading.Thread(target=_load, args=(base_url, deployed, stop, outcomes)) for _ in range(4)]
    threads.append(threading.Thread(target=_probe_health, args=(base_url, stop, slowest)))
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        os.kill(old_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        recovered = _wait_until_all_serve(
            base_url, deployed, restarted=lambda: supervisor.status().restarts == 1
        )
        recovery_s = time.monotonic() - killed_at
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT_S * 3)
    print(
        f"\nembedded Triton SIGKILLed under load: all {len(deployed)} aliases serve again after "
        f"{recovery_s:.2f} s; outcomes {dict(outcomes)}; slowest health/status answer {max(slowest):.3f} s"
    )
    assert recovered and recovery_s < 15
    assert set(outcomes) <= {"ok", "503+retry-after"}, outcomes
    assert outcomes["ok"] > 0
    assert max(slowest) < 2.5, "readiness and status answer within the short health timeout"
    assert not any(t.is_alive() for t in threads), "no request hung"
    status = supervisor.status()
    assert (status.state, status.restarts, status.last_exit_code) == (SupervisorState.RUNNING, 1, -9)
    assert group_members(old_pid) == [], "the dead Triton's stubs were killed"
    body = api.client.get("/v1/status", headers=api.headers()).json()
    assert body["embedded_triton"]["restarts"] == 1 and body["tritons"][0]["state"] == "ready"


def _wait_until_all_serve(
    base_url: str, deployed: list[Deployed], *, restarted: Callable[[], bool], deadline_s: float = 30
) -> bool:
    """Once Triton has been restarted, wait until every deployed alias answers 200."""
    deadline = time.monotonic() + deadline_s
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            if restarted() and all(_outcome(client, d) == "ok" for d in deployed):
                return True
            time.sleep(0.05)
    return False


def _environ(pid: int) -> dict[str, str]:
    """A process's environment, as /proc shows it."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)
