"""Load generators for `bench.proxy_overhead`: wrk (HTTP), h2load (gRPC unary over HTTP/2), and our own.

Each runs in its own process, closed-loop, for a fixed time; the CPU of the watched processes (the
control plane, Triton's process group) is read from /proc/<pid>/stat around the measured run. wrk,
h2load and the reference proxy nginx come from Debian (`wrk`, `nghttp2-client`, `nginx-light`) and are
installed with apt-get when missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import cpu_seconds, cpu_used, system_busy_seconds

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"wrk": "wrk", "h2load": "nghttp2-client", "nginx": "nginx-light"}


class GeneratorMissing(RuntimeError):
    """A load generator is not installed and could not be installed."""


@dataclass
class Target:
    """Where one mode sends its requests: port, path, body and headers."""

    port: int
    path: str
    body: bytes
    headers: list[str] = field(default_factory=list)


@dataclass
class Run:
    """One measured run: what the report folds in."""

    result: dict[str, Any]
    latencies_ns: np.ndarray
    cpu_s: dict[int, float]
    busy_s: float


def ensure(tool: str) -> str:
    """The path of `tool`, installing its Debian package with apt-get if it is missing."""
    found = _which(tool)
    if found:
        return found
    package = PACKAGES[tool]
    print(f"installing {package} (for {tool}) with apt-get ...", file=sys.stderr, flush=True)
    for command in (["apt-get", "install", "-y", "-q", package], ["apt-get", "update", "-q"]):
        subprocess.run(command, capture_output=True, text=True, timeout=600)
        found = _which(tool)
        if found:
            return found
    done = subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, text=True)
    found = _which(tool)
    if not found:
        raise GeneratorMissing(
            f"{tool} is not installed and `apt-get install {package}` failed:\n{done.stderr}"
        )
    return found


def _which(tool: str) -> str | None:
    """`tool` on PATH, or in the sbin folders a non-root PATH leaves out (nginx)."""
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")


def _measured(
    argv: list[str], watch: list[int], timeout: float
) -> tuple[str, dict[int, float], float, float]:
    """Run `argv`, returning its stdout, the CPU seconds of each watched pid, busy CPU and wall time."""
    import time

    before = {pid: cpu_seconds(pid) for pid in watch}
    busy = system_busy_seconds()
    began = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )
    cpu = {pid: cpu_used(pid, before[pid]) for pid in watch}
    return done.stdout, cpu, system_busy_seconds() - busy, wall


_WRK_SCRIPT = """
wrk.method = "POST"
local f = io.open("%(body)s", "rb")
wrk.body = f:read("*a")
f:close()
%(headers)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "errors": %%d, "status_errors": %%d, '
    .. '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(90),
    latency:percentile(99)))
end
"""


def wrk(target: Target, concurrency: int, duration: float, watch: list[int], tmp: Path) -> Run:
    """wrk with a Lua script that POSTs the body; its own latency percentiles (no raw latencies)."""
    binary = ensure("wrk")
    body = tmp / "wrk-body"
    body.write_bytes(target.body)
    headers = "\n".join(
        f'wrk.headers["{name}"] = "{value}"'
        for name, value in (h.split(": ", 1) for h in ["Content-Type: application/json", *target.headers])
    )
    script = tmp / "wrk.lua"
    script.write_text(_WRK_SCRIPT % {"body": body, "headers": headers})
    threads = min(2, concurrency)
    seconds = max(1, round(duration))  # wrk takes whole seconds
    argv = [binary, "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s", "-s", str(script)]
    argv.append(f"http://127.0.0.1:{target.port}{target.path}")
    out, cpu, busy, _ = _measured(argv, watch, duration + 60)
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")
    raw = json.loads(line[len("RESULT ") :])
    elapsed = raw["duration_us"] / 1e6
    errors = raw["errors"] + raw["status_errors"]
    result = {
        "requests": raw["requests"] - raw["status_errors"],
        "errors": errors,
        "first_error": f"{errors} wrk errors (non-2xx or socket)" if errors else "",
        "elapsed_s": elapsed,
        "rps": (raw["requests"] - raw["status_errors"]) / elapsed,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
    }
    return Run(result, np.empty(0, dtype=np.int64), cpu, busy)


def h2load(target: Target, concurrency: int, duration: float, watch: list[int], tmp: Path, conns: int) -> Run:
    """h2load sending the pre-framed gRPC body as unary calls: `conns` connections, the rest as streams."""
    binary = ensure("h2load")
    clients = max(1, min(conns, concurrency))
    streams = max(1, concurrency // clients)
    body = tmp / "h2load-body"
    body.write_bytes(target.body)
    log = tmp / "h2load.log"
    argv = [binary, "-c", str(clients), "-m", str(streams), "-t", "1", "-D", f"{duration:g}"]
    argv += ["-d", str(body), "--log-file", str(log)]
    for header in ["content-type: application/grpc", "te: trailers", *target.headers]:
        argv += ["-H", header]
    argv.append(f"http://127.0.0.1:{target.port}{target.path}")
    out, cpu, busy, wall = _measured(argv, watch, duration + 60)
    rows = np.loadtxt(log, dtype=np.int64, ndmin=2) if log.stat().st_size else np.empty((0, 3), np.int64)
    log.unlink()
    ok = rows[rows[:, 1] == 200] if rows.size else rows
    latencies = ok[:, 2] * 1000 if ok.size else np.empty(0, dtype=np.int64)
    elapsed = _h2load_elapsed(out) or wall
    failed = len(rows) - len(ok)
    result = {
        "requests": len(ok),
        "errors": failed,
        "first_error": f"{failed} HTTP/2 answers not 200" if failed else "",
        "elapsed_s": elapsed,
        "rps": len(ok) / elapsed,
    }
    return Run(result, latencies, cpu, busy)


def _h2load_elapsed(out: str) -> float | None:
    """The run's time from h2load's `finished in 5.00s, ...` line."""
    for line in out.splitlines():
        if line.startswith("finished in "):
            value = line.split()[2].rstrip(",")
            scale = 1e-3 if value.endswith("ms") else 1.0
            return float(value.rstrip("ms")) * scale
    return None


def own(target: Target, concurrency: int, duration: float, watch: list[int], tmp: Path) -> Run:
    """bench.loadgen (HTTP/1.1 keep-alive, uvloop) in its own process; raw latencies."""
    body, out = tmp / "own-body", tmp / "own-latencies.bin"
    body.write_bytes(target.body)
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(target.port), "--path", target.path]
    argv += ["--body-file", str(body), "--concurrency", str(concurrency), "--duration", f"{duration:g}"]
    argv += ["--warmup", "0", "--latencies-out", str(out)]
    for header in target.headers:
        argv += ["--header", header]
    stdout, cpu, busy, _ = _measured(argv, watch, duration + 120)
    result: dict[str, Any] = json.loads(stdout)
    return Run(result, np.fromfile(out, dtype=np.int64), cpu, busy)
