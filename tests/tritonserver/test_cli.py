"""`triton serve` runs Triton in the foreground and stops it cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from control_plane.tritonserver import TritonClient, free_port
from tests.tritonserver.procfs import group_is_gone

CLI = "from control_plane.tritonserver.cli import app; app()"


def _read_until(proc: subprocess.Popen[str], pattern: str, *, timeout_s: float) -> re.Match[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if match := re.search(pattern, line):
            return match
    raise AssertionError(f"no {pattern!r} in output: {''.join(seen)}")


def test_serve_runs_until_sigterm_then_stops_triton(tmp_path: Path) -> None:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    argv = [sys.executable, "-c", CLI, "serve", "--repository", str(tmp_path / "repository")]
    argv += ["--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    argv += ["--metrics-port", str(metrics_port), "--workdir", str(tmp_path / "work")]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    triton_pid = None
    try:
        match = _read_until(proc, r"Triton ready: .* \(pid (\d+)\)", timeout_s=60)
        triton_pid = int(match.group(1))
        assert f":{http_port}" in match.group(0) and f":{grpc_port}" in match.group(0)
        client = TritonClient.from_url(f"http://127.0.0.1:{http_port}", timeout_s=5)
        assert client.is_ready()
        client.close()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None and "Triton stopped" in proc.stdout.read()
        assert group_is_gone(triton_pid)
        assert (tmp_path / "repository").is_dir()  # created for an empty embedded setup
    finally:
        for pgid in (proc.pid, triton_pid):
            if pgid is not None and not group_is_gone(pgid):
                os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=10)
