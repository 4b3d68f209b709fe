"""A self-contained control plane (with its embedded Triton) in a temp dir, and a model deployed on it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from tests.support import model_files, procs

BIN = Path(sys.executable).parent


class SetupError(RuntimeError):
    """The stack could not be brought up."""


@dataclass(frozen=True)
class Stack:
    """A running control plane, its Triton, and an admin client on it."""

    tmp: Path
    proc: subprocess.Popen[bytes]
    cp_port: int
    triton_url: str
    triton_pid: int
    admin: httpx.Client
    grpc_port: int = 0  # the control plane's gRPC port (0: not served)
    triton_grpc_url: str = ""  # host:port of Triton's gRPC endpoint

    @property
    def triton_port(self) -> int:
        """Port of Triton's HTTP endpoint."""
        return int(self.triton_url.rsplit(":", 1)[1])

    def triton_group(self) -> list[int]:
        """tritonserver and its Python-backend stubs (its process group)."""
        return group_members(self.triton_pid)


@dataclass(frozen=True)
class Deployment:
    """A ready ONNX version behind `production`, and a consumer key to call it."""

    model: str
    triton_name: str
    consumer_key: str


def group_members(pgid: int) -> list[int]:
    """PIDs of live processes whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    members.append(int(entry.name))
    return sorted(members)


def _children(pid: int, comm: str) -> list[int]:
    """Direct children of `pid` named `comm`."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            children += [int(c) for c in (task / "children").read_text().split()]
    named = []
    for child in children:
        with suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == comm:
                named.append(child)
    return named


def _log_tail(path: Path, lines: int = 30) -> str:
    with suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def _wait_ready(client: httpx.Client, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"control plane exited with {proc.returncode}:\n{_log_tail(log)}")
        with suppress(httpx.TransportError):
            if client.get("/v2/health/ready").status_code == 200:
                return
        time.sleep(0.2)
    raise SetupError(f"control plane not ready after {timeout}s:\n{_log_tail(log)}")


@contextmanager
def scratch_database(server_url: str) -> Iterator[str]:
    """A new, empty database on the Postgres server of `server_url` (any database of it that this role
    can connect to), dropped on exit: its URL."""
    conninfo = server_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"cp_bench_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise SetupError(f"cannot create a scratch database on {server_url}: {exc}") from exc
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def control_plane(
    *, ready_timeout: float = 180.0, grpc: bool = False, database_url: str | None = None
) -> Iterator[Stack]:
    """Migrate a fresh registry (SQLite in the temp dir, or `database_url`: an empty database), serve
    the control plane with embedded Triton, tear all down (`BENCH_KEEP_LOG=path` keeps the control
    plane's log)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    token = secrets.token_urlsafe(24)
    port = procs.free_port()
    grpc_port = procs.free_port() if grpc else 0
    env = {
        **os.environ,
        "CP_DATABASE_URL": database_url or f"sqlite:///{tmp}/registry.db",
        "CP_ARTIFACT_STORE": "local",
        "CP_ARTIFACT_DIR": str(tmp / "artifacts"),
        "CP_MODEL_REPOSITORY": str(tmp / "model_repository"),
        "CP_TRITON_WORKDIR": str(tmp / "triton"),
        "CP_TRITON_EMBEDDED": "true",
        "CP_HTTP_PORT": str(port),
        "CP_GRPC_PORT": str(grpc_port),
        "CP_ADMIN_TOKEN": token,
    }
    proc: subprocess.Popen[bytes] | None = None
    triton_pids: list[int] = []
    try:
        upgrade = subprocess.run(
            [str(BIN / "control-plane"), "db", "upgrade"], env=env, capture_output=True, text=True
        )
        if upgrade.returncode != 0:
            raise SetupError(f"db upgrade failed:\n{upgrade.stdout}{upgrade.stderr}")
        log = tmp / "control-plane.log"
        proc = procs.start([str(BIN / "control-plane"), "serve"], log=log, env=env)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60, trust_env=False) as admin:
            _wait_ready(admin, proc, log, ready_timeout)
            status = admin.get("/v1/status")
            if status.status_code != 200 or not status.json()["tritons"]:
                raise SetupError(f"GET /v1/status: {status.status_code} {status.text}")
            triton_url = status.json()["tritons"][0]["http_url"]
            triton_grpc_url = status.json()["tritons"][0]["grpc_url"]
            triton_pids = _children(proc.pid, "tritonserver")
            if len(triton_pids) != 1:
                raise SetupError(f"expected one Triton child of {proc.pid}, found {triton_pids}")
            yield Stack(tmp, proc, port, triton_url, triton_pids[0], admin, grpc_port, triton_grpc_url)
    finally:
        try:
            if proc is not None:
                _teardown(proc, triton_pids)
        finally:
            kept = os.environ.get("BENCH_KEEP_LOG")  # a path: the control plane's log is copied there
            if kept and (tmp / "control-plane.log").exists():
                shutil.copyfile(tmp / "control-plane.log", kept)
            shutil.rmtree(tmp, ignore_errors=True)


def _teardown(proc: subprocess.Popen[bytes], triton_pids: list[int]) -> None:
    """SIGTERM the control plane (it stops Triton); check that nothing of either group is left."""
    procs.stop(proc, timeout=60)
    deadline = time.monotonic() + 30
    leftovers = group_members(proc.pid) + [p for t in triton_pids for p in group_members(t)]
    while leftovers and time.monotonic() < deadline:
        time.sleep(0.2)
        leftovers = group_members(proc.pid) + [p for t in triton_pids for p in group_members(t)]
    if leftovers:
        for pgid in triton_pids:
            with suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        raise SetupError(f"processes left after teardown (killed): {leftovers}")
    print(f"teardown: control plane {proc.pid} and Triton group {triton_pids} gone", file=sys.stderr)


def deploy(stack: Stack, *, model: str = "mlp", tenant: str = "bench", timeout: float = 180.0) -> Deployment:
    """Tenant, consumer key, ONNX MLP (x: FP32 [-1, 4] -> y: FP32 [-1, 3]) ready behind `production`."""
    api = stack.admin

    def ok(response: httpx.Response, code: int) -> httpx.Response:
        if response.status_code != code:
            raise SetupError(
                f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
            )
        return response

    ok(api.post("/v1/tenants", json={"name": tenant}), 201)
    key = ok(api.post(f"/v1/tenants/{tenant}/keys", json={"role": "consumer"}), 201).json()["key"]
    models = f"/v1/tenants/{tenant}/models"
    ok(api.post(models, json={"name": model, "format": "onnx"}), 201)
    artifact = model_files.onnx_mlp(stack.tmp / "mlp.onnx")
    with artifact.open("rb") as f:
        files = {"file": (artifact.name, f, "application/octet-stream")}
        number = ok(api.post(f"{models}/{model}/versions", files=files), 201).json()["version"]
    ok(api.put(f"{models}/{model}/aliases/production", json={"version": number}), 200)  # loads it
    deadline = time.monotonic() + timeout
    while True:
        detail = ok(api.get(f"{models}/{model}/versions/{number}"), 200).json()
        if detail["state"] == "ready":
            break
        if detail["state"] == "failed" or time.monotonic() > deadline:
            raise SetupError(f"version {number} did not become ready: {detail}")
        time.sleep(0.2)
    return Deployment(model=model, triton_name=detail["triton_name"], consumer_key=key)
