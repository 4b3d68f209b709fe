"""scripts/serve end to end: SQLite, local artifacts, bundled Triton; ready, usable, and clean on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import httpx
import tritonclient.grpc as triton_grpc

from control_plane.tritonserver import TritonProcess
from tests.support import model_files
from tests.support.procs import PORT_TAKEN, free_port
from tests.tritonserver.procfs import live_processes

ROOT = Path(__file__).resolve().parents[1]


def _descendants(root_pid: int) -> set[int]:
    procs = live_processes()
    found: set[int] = set()
    frontier = {root_pid}
    while frontier:
        children = {p.pid for p in procs if p.ppid in frontier} - found
        found |= children
        frontier = children
    return found


def _wait_for_line(
    proc: subprocess.Popen[str], pattern: str, *, timeout: float, seen: list[str]
) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"scripts/serve ended early:\n{''.join(seen)}")
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n{''.join(seen)}")


def _register_onnx_model(client: httpx.Client, tmp_path: Path) -> str:
    """Tenant, model, upload; the version's state once settled."""
    assert client.post("/v1/tenants", json={"name": "acme"}).status_code == 201
    assert client.post("/v1/tenants/acme/models", json={"name": "mlp", "format": "onnx"}).status_code == 201
    with model_files.onnx_mlp(tmp_path / "mlp.onnx").open("rb") as f:
        assert client.post("/v1/tenants/acme/models/mlp/versions", files={"file": f}).status_code == 201
    # An upload no longer loads (residency): load it now, as an operator warming a version would.
    loaded = client.post("/v1/tenants/acme/models/mlp/versions/1/load", timeout=120)
    assert loaded.status_code == 200, loaded.text
    deadline = time.monotonic() + 120
    state = "registered"
    while state not in ("ready", "failed") and time.monotonic() < deadline:
        time.sleep(0.3)
        state = client.get("/v1/tenants/acme/models/mlp/versions/1").json()["state"]
    return str(state)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without CP_ settings, plus folders in `tmp_path` and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CP_")}
    env.update(
        CP_DATABASE_URL=f"sqlite:///{tmp_path / 'registry.db'}",
        CP_ARTIFACT_DIR=str(tmp_path / "artifacts"),
        CP_MODEL_REPOSITORY=str(tmp_path / "model_repository"),
        CP_TRITON_WORKDIR=str(tmp_path / "triton"),
        **extra,
    )
    return env


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    """scripts/serve in its own session, its output on a pipe."""
    return subprocess.Popen(
        ["bash", str(ROOT / "scripts" / "serve")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _start_ready(
    tmp_path: Path, seen: list[str], ports: tuple[int, int] | None = None, **extra: str
) -> tuple[subprocess.Popen[str], int, int]:
    """scripts/serve on `ports` (HTTP, gRPC; else free ones), up to its 'Control plane ready' line: the
    process and its two ports. Another test's server may bind a port between free_port handing it out
    (or an earlier server here giving it back) and this server binding it; the server then says so and
    stops, and it is started again on other ports."""
    for _ in range(3):
        port, grpc_port = ports or (free_port(), free_port())
        ports = None
        proc = _start(_env(tmp_path, CP_HTTP_PORT=str(port), CP_GRPC_PORT=str(grpc_port), **extra))
        try:
            _wait_for_line(proc, r"Control plane ready", timeout=240, seen=seen)
            return proc, port, grpc_port
        except AssertionError:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            if not any(PORT_TAKEN in line for line in seen):
                raise
            seen.clear()
    raise AssertionError(f"three servers in a row found a port taken:\n{''.join(seen)}")


def test_serve_reaches_ready_serves_a_model_and_stops_cleanly(tmp_path: Path) -> None:
    seen: list[str] = []
    proc, port, grpc_port = _start_ready(tmp_path, seen, CP_HTTP_KEEP_ALIVE_S="2")
    try:
        key = _wait_for_line(proc, r"Admin key \(generated.*\): (\S+)", timeout=5, seen=seen).group(1)
        assert any(f"gRPC on 127.0.0.1:{grpc_port})" in line for line in seen), seen  # the banner names it
        example = _wait_for_line(proc, r"curl -H \"Authorization: Bearer (\S+)\" (\S+)", timeout=5, seen=seen)
        assert example.group(1) == key
        children = _descendants(proc.pid)
        assert any("tritonserver" in " ".join(p.argv) for p in live_processes() if p.pid in children)

        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            status = client.get(example.group(2)).json()
            assert status["database"] == {"ok": True, "detail": "sqlite"}
            assert status["artifact_store"] == {"ok": True, "detail": "local"}
            [triton] = status["tritons"]
            assert (triton["state"], triton["embedded"]) == ("ready", True)
            assert _register_onnx_model(client, tmp_path) == "ready"
        with triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}") as grpc_client:
            assert grpc_client.is_server_live()
        _idle_connection_closed_after(port, 2)

        children = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        time.sleep(0.5)
        left = [p for p in live_processes() if p.pid in children]
        assert left == [], f"left behind: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _idle_connection_closed_after(port: int, keep_alive_s: float) -> None:
    """CP_HTTP_KEEP_ALIVE_S reaches the server: an idle keep-alive connection is closed after it, not
    before (uvicorn's own default is 5 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: cp\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        assert sock.recv(65536) == b""  # the server closed the idle connection
        idle = time.monotonic() - answered
    assert keep_alive_s - 0.3 <= idle < 4.5, idle


def _serve(
    tmp_path: Path, seen: list[str], ports: tuple[int, int] | None = None, **extra: str
) -> tuple[subprocess.Popen[str], tuple[int, int]]:
    """scripts/serve started and ready (`_start_ready`): the process and its HTTP and gRPC ports."""
    proc, port, grpc_port = _start_ready(tmp_path, seen, ports, **extra)
    # Keep reading its output, so that a full pipe never blocks the server's logging.
    assert proc.stdout is not None
    threading.Thread(target=lambda: seen.extend(proc.stdout or ()), daemon=True).start()
    return proc, (port, grpc_port)


def _predict(port: int, key: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v2/models/mlp/infer",
        json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _instances(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as conn:
        return list(conn.execute("SELECT name, http_url FROM triton_instances ORDER BY id"))


def test_serve_again_on_the_same_folders_serves_the_same_aliases(tmp_path: Path) -> None:
    admin = "serve-restart-admin-key"
    seen: list[str] = []
    proc, ports = _serve(tmp_path, seen, CP_ADMIN_TOKEN=admin)
    port = ports[0]
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {admin}"}
        ) as c:
            assert _register_onnx_model(c, tmp_path) == "ready"
            promoted = c.put("/v1/tenants/acme/models/mlp/aliases/production", json={"version": 1})
            assert promoted.status_code == 200, promoted.text
            key = c.post("/v1/tenants/acme/keys", json={"role": "consumer"}).json()["key"]
        first = _predict(port, key)
        assert first.status_code == 200, first.text
        first_url = _instances(tmp_path / "registry.db")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

        # Same folders and ports (as on 8080 every day), nothing done by hand in between.
        proc, again_ports = _serve(tmp_path, seen, ports, CP_ADMIN_TOKEN=admin)
        print(f"\nserved again on {again_ports} (the first time {ports})")
        port = again_ports[0]
        again = _predict(port, key)
        assert again.status_code == 200, again.text
        assert again.json()["outputs"] == first.json()["outputs"]
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {admin}"}
        ) as c:
            [triton] = c.get("/v1/status").json()["tritons"]
        assert (triton["name"], triton["state"], triton["embedded"]) == ("embedded", "ready", True)
        assert _instances(tmp_path / "registry.db") == [("embedded", triton["http_url"])]
        print(f"\ninstance row {first_url} -> {_instances(tmp_path / 'registry.db')}")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_port_another_server_holds_is_refused_at_once_not_taken_for_ready(
    tmp_path: Path, triton_backend_dir: Path
) -> None:
    """A Triton's metrics port answers 200 to any GET, /v2/health/ready included. scripts/serve given
    that port (or handed it by a race: CI once) printed "Control plane ready" and the API answered 405s.
    The server now takes its ports before it starts anything, says which one it cannot have, and the
    script ends with its status, without calling it ready."""
    (tmp_path / "repository").mkdir()
    other = TritonProcess(
        repository=str(tmp_path / "repository"), workdir=tmp_path / "other", backend_dir=triton_backend_dir
    )
    other.start(timeout_s=60)
    try:
        assert httpx.get(f"http://127.0.0.1:{other.metrics_port}/v2/health/ready").status_code == 200
        for setting in ("CP_HTTP_PORT", "CP_GRPC_PORT"):
            ports = {"CP_HTTP_PORT": str(free_port()), "CP_GRPC_PORT": str(free_port())}
            ports[setting] = str(other.metrics_port)
            (tmp_path / setting).mkdir()
            proc = _start(_env(tmp_path / setting, **ports))
            out, _ = proc.communicate(timeout=120)
            assert proc.returncode == 1, out
            taken = f"{setting}: cannot listen on 127.0.0.1:{other.metrics_port}: Address already in use"
            assert taken in out
            assert "Control plane ready" not in out
            assert "embedded Triton" not in out  # refused before it started one
    finally:
        other.stop()
