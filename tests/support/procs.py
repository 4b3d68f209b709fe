"""Start helper servers on free ports and stop them by the PID we started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from control_plane.tritonserver.process import free_port

__all__ = ["PORT_TAKEN", "free_port", "start", "start_control_plane", "stop", "wait_for_port"]

PORT_TAKEN = "cannot listen on"  # what `control-plane serve` says when a port it was given is taken


def wait_for_port(port: int, *, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def start(argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server in its own process group, output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """SIGTERM the process group we started, SIGKILL it if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children left in the group


def start_control_plane(env: dict[str, str], *, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`control-plane serve` of this interpreter on free ports (HTTP, and gRPC unless `env` turns it off
    with CP_GRPC_PORT=0), as `start` does: the process and its HTTP port, once it holds its ports (it
    wrote its --listening-file) and has started (`/v2/health/live` answers; ready may take longer).

    Another test's server may bind a port between free_port handing it out and this server binding it.
    The server then says so and exits, and it is started again on other ports."""
    listening = log.with_name(f"{log.name}.listening")
    for _ in range(3):
        port = free_port()
        grpc_port = "0" if env.get("CP_GRPC_PORT") == "0" else str(free_port())
        listening.unlink(missing_ok=True)
        proc = start(
            [sys.executable, "-m", "control_plane.cli", "serve", "--listening-file", str(listening)],
            log=log,
            env={**env, "CP_HTTP_PORT": str(port), "CP_GRPC_PORT": grpc_port},
        )
        deadline = time.monotonic() + 60
        while not listening.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if listening.exists():
            _wait_until_live(proc, port, log)
            return proc, port
        stop(proc)
        said = log.read_text(errors="replace")
        if PORT_TAKEN not in said:
            raise RuntimeError(f"control-plane serve did not bind its ports:\n{said[-3000:]}")
    raise RuntimeError(f"three servers in a row found a port taken:\n{said[-3000:]}")


def _wait_until_live(proc: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 180.0) -> None:
    """Until the server answers `/v2/health/live` (its start-up done), or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"control-plane serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=5).status_code == 200:
                return
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError(f"control-plane serve did not start in {timeout:g} s:\n{log.read_text()[-3000:]}")
