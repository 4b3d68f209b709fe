"""Fault: `control-plane serve` with the embedded Triton is SIGKILLed; no Triton process outlives it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from control_plane.db import migrate
from tests.support import model_files
from tests.support.procs import start_control_plane
from tests.tritonserver.procfs import Proc, group_members, live_processes, stubs_of

ADMIN = "fault-test-admin-key"


def _descendants(root_pid: int) -> list[Proc]:
    procs = live_processes()
    found: list[Proc] = []
    frontier = {root_pid}
    while frontier:
        children = [p for p in procs if p.ppid in frontier and p not in found]
        found += children
        frontier = {p.pid for p in children}
    return found


def _still_alive(processes: list[Proc]) -> list[Proc]:
    alive = {p.pid for p in live_processes()}
    return [p for p in processes if p.pid in alive]


def _wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"control-plane serve exited:\n{log.read_text()[-3000:]}"
        try:
            if client.get("/v2/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not ready in time:\n{log.read_text()[-3000:]}")


def _deploy(client: httpx.Client, tmp_path: Path) -> None:
    """A model whose version is loaded on the embedded Triton (so a stub process runs)."""
    assert client.post("/v1/tenants", json={"name": "acme"}).status_code == 201
    assert client.post("/v1/tenants/acme/models", json={"name": "mlp", "format": "onnx"}).status_code == 201
    with model_files.onnx_mlp(tmp_path / "mlp.onnx").open("rb") as f:
        assert client.post("/v1/tenants/acme/models/mlp/versions", files={"file": f}).status_code == 201
    # An upload no longer loads (residency): load it now.
    assert client.post("/v1/tenants/acme/models/mlp/versions/1/load", timeout=120).status_code == 200
    deadline = time.monotonic() + 120
    while client.get("/v1/tenants/acme/models/mlp/versions/1").json()["state"] != "ready":
        assert time.monotonic() < deadline, "the version did not load"
        time.sleep(0.3)


def test_sigkill_of_the_control_plane_leaves_no_triton_or_stub_after_5_s(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
    env.update(
        CP_DATABASE_URL=database_url,
        CP_ARTIFACT_DIR=str(tmp_path / "artifacts"),
        CP_MODEL_REPOSITORY=str(tmp_path / "model_repository"),
        CP_TRITON_WORKDIR=str(tmp_path / "triton"),
        CP_TRITON_EMBEDDED="true",
        CP_ADMIN_TOKEN=ADMIN,
    )
    log = tmp_path / "serve.log"
    proc, port = start_control_plane(env, log=log)
    triton = None
    try:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as client:
            _wait_ready(client, proc, log)
            _deploy(client, tmp_path)
            triton_http = client.get("/v1/status").json()["tritons"][0]["http_url"]
        descendants = _descendants(proc.pid)  # Triton, its stubs and guard, the request-check workers
        [triton] = [p for p in descendants if p.argv and p.argv[0].endswith("/tritonserver")]
        assert stubs_of(triton.pid), "the loaded version runs a Python-backend stub"
        host, triton_port = triton_http.split("://", 1)[1].split(":")

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = time.monotonic()
        while group_members(triton.pid) and time.monotonic() - killed_at < 5:
            time.sleep(0.01)
        gone_after = time.monotonic() - killed_at
        print(f"\nTriton and its stubs gone {gone_after * 1000:.0f} ms after SIGKILL of the control plane")

        assert group_members(triton.pid) == [], "tritonserver or a stub outlived the control plane"
        assert not stubs_of(triton.pid)
        assert triton.pid not in {p.pid for p in live_processes()}
        while time.monotonic() - killed_at < 5 and _still_alive(descendants):
            time.sleep(0.05)
        assert not _still_alive(descendants), "a process of the control plane outlived it by 5 s"
        with socket.socket() as sock:
            assert sock.connect_ex((host, int(triton_port))) != 0, "nobody serves the models any more"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if triton is not None and group_members(triton.pid):
            os.killpg(triton.pid, signal.SIGKILL)
