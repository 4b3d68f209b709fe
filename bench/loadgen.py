"""Closed-loop HTTP/1.1 load generator, meant to run in its own process (stdlib + uvloop only).

    python -m bench.loadgen --port P --path /v2/models/m/infer --body-file F --concurrency 16 \
        --duration 10 [--header 'Authorization: Bearer k'] [--latencies-out FILE] [--watch-pid PID ...]

N keep-alive connections each send the same precomputed request bytes and send the next one as
soon as a response is complete. Only responses completed inside the timed window (after the
warmup) are counted. Prints one JSON object on stdout: requests, errors, elapsed_s, rps, p50/p90/
p99 in ms, the CPU seconds (utime + stime) that itself and each --watch-pid used during the window,
and the busy CPU seconds of the whole machine in that window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from array import array
from functools import partial
from pathlib import Path
from typing import cast

import uvloop

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class Stats:
    """Shared by all connections: the timed window and what completed in it."""

    def __init__(self) -> None:
        self.window_start_ns = 0  # 0 until the warmup is over
        self.stopping = False
        self.latencies = array("q")
        self.errors = 0
        self.first_error = ""

    def error(self, what: str) -> None:
        """Count an error (warmup included: any error means something is broken) and keep the first."""
        if not self.stopping:
            self.errors += 1
        self.first_error = self.first_error or what


class Conn(asyncio.Protocol):
    """One keep-alive connection in a closed loop; parses only status, header end and Content-Length."""

    def __init__(self, request: bytes, stats: Stats, done: asyncio.Future[None]) -> None:
        self.request = request
        self.stats = stats
        self.done = done
        self.buf = bytearray()
        self.need = -1  # total bytes of the current response, -1 while headers are incomplete
        self.status_ok = False
        self.status_line = b""
        self.sent_ns = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's TCPTransport is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_ns = time.perf_counter_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                self.status_ok = head[9:12] == b"200"
                self.status_line = head[: head.find(b"\r\n")]
                at = head.find(b"\r\ncontent-length:")
                if at < 0:
                    self.stats.error("response without Content-Length")
                    self._finish()
                    return
                stop = head.find(b"\r\n", at + 2)
                self.need = end + 4 + int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(buf) < self.need:
                return
            now = time.perf_counter_ns()
            del buf[: self.need]
            self.need = -1
            stats = self.stats
            if not self.status_ok:
                stats.error(f"unexpected {self.status_line.decode(errors='replace')}")
            elif stats.window_start_ns and not stats.stopping:
                stats.latencies.append(now - self.sent_ns)
            if stats.stopping:
                self._finish()
                return
            self._send()

    def _finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stats.stopping:
            self.stats.error(f"connection lost: {exc!r}")
        if not self.done.done():
            self.done.set_result(None)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds; 0.0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def cpu_used(pid: int, before: float) -> float:
    """CPU seconds `pid` used since `cpu_seconds(pid)` was `before`: none when it is gone since (its
    time went to its parent's children's count, which is not read), never a negative figure."""
    return max(0.0, cpu_seconds(pid) - before)


def system_busy_seconds() -> float:
    """CPU time all CPUs spent busy since boot (user, nice, system, irq, softirq, steal), in seconds."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLK_TCK


def percentile_ms(sorted_ns: list[int], q: float) -> float:
    """Nearest-rank percentile of sorted nanosecond values, in ms (nan when empty)."""
    if not sorted_ns:
        return float("nan")
    rank = max(1, min(len(sorted_ns), round(q / 100 * len(sorted_ns) + 0.5)))
    return sorted_ns[rank - 1] / 1e6


async def run(args: argparse.Namespace, request: bytes) -> dict[str, object]:
    """Open the connections, warm up, measure for the duration, then stop."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    watched = [os.getpid(), *args.watch_pid]
    dones: list[asyncio.Future[None]] = []
    for _ in range(args.concurrency):
        done: asyncio.Future[None] = loop.create_future()
        dones.append(done)
        await loop.create_connection(partial(Conn, request, stats, done), args.host, args.port)
    await asyncio.sleep(args.warmup)
    cpu_before = [cpu_seconds(pid) for pid in watched]
    busy_before = system_busy_seconds()
    stats.window_start_ns = start = time.perf_counter_ns()
    await asyncio.sleep(args.duration)
    stats.stopping = True
    elapsed_s = (time.perf_counter_ns() - start) / 1e9
    cpu = [cpu_used(pid, before) for pid, before in zip(watched, cpu_before, strict=True)]
    busy = system_busy_seconds() - busy_before
    await asyncio.wait_for(asyncio.gather(*dones), timeout=30)
    if args.latencies_out:
        with open(args.latencies_out, "wb") as out:
            stats.latencies.tofile(out)
    ordered = sorted(stats.latencies)
    return {
        "requests": len(ordered),
        "errors": stats.errors,
        "first_error": stats.first_error,
        "elapsed_s": elapsed_s,
        "rps": len(ordered) / elapsed_s,
        "p50_ms": percentile_ms(ordered, 50),
        "p90_ms": percentile_ms(ordered, 90),
        "p99_ms": percentile_ms(ordered, 99),
        "cpu_s": {str(pid): round(s, 3) for pid, s in zip(watched, cpu, strict=True)},
        "system_busy_s": round(busy, 3),
    }


def build_request(host: str, port: int, path: str, headers: list[str], body: bytes) -> bytes:
    """The exact bytes of one keep-alive POST."""
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *headers,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def main(argv: list[str] | None = None) -> int:
    """Run one load and print its JSON summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--latencies-out", help="write the window's latencies (int64 ns) to this file")
    parser.add_argument("--watch-pid", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    request = build_request(args.host, args.port, args.path, args.header, args.body_file.read_bytes())
    result = uvloop.run(run(args, request))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
