"""Does a noisy tenant hurt a quiet one? The quiet tenant's latency alone, then under attack.

    python -m bench.noisy_neighbor [--duration 15] [--concurrency 4] [--slow 500] [--big 1] [--bombs 1]
                                   [--nested 1]

Brings up its own control plane (SQLite, embedded Triton) in a temp dir, deploys the same small ONNX
MLP for two tenants, and measures the quiet tenant's KServe v2 requests with the closed-loop load
generator (its own process): first alone, then while `bench.noise` (another process) holds hundreds
of slow connections open and the noisy tenant sends 30 MB bodies, gzip bombs and small bodies of
100k nested lists. Prints both p50/p99,
what the noise got back, the control plane's peak memory, and whether Triton survived. Target: the
quiet p99 under attack stays below 50 ms. Exit 0 even when the target is missed; 2 if setup failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.stack import SetupError, Stack, control_plane, deploy

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.5,-1.0,2.0,0.25]}]}'
TARGET_P99_MS = 50.0


class PeakRss:
    """The highest resident memory of a process while it is being watched."""

    def __init__(self, pid: int):
        self.pid, self.peak_kib = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))


def quiet_run(stack: Stack, model: str, key: str, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """One closed-loop run of the quiet tenant."""
    body_file = stack.tmp / "quiet.json"
    body_file.write_bytes(BODY)
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(stack.cp_port)]
    argv += ["--path", f"/v2/models/{model}/infer", "--body-file", str(body_file)]
    argv += ["--concurrency", str(args.concurrency), "--duration", str(args.duration), "--warmup", "1"]
    argv += ["--header", f"Authorization: Bearer {key}", "--latencies-out", str(stack.tmp / f"{tag}.bin")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 120)
    if done.returncode != 0:
        raise SetupError(f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def noisy_run(stack: Stack, quiet: tuple[str, str], noisy: tuple[str, str], args: argparse.Namespace) -> Any:
    """The quiet run again, with the noise generator going from a few seconds before to after it."""
    argv = [sys.executable, "-m", "bench.noise", "--port", str(stack.cp_port), "--model", noisy[0]]
    argv += ["--key", noisy[1], "--duration", str(args.duration + 6), "--slow", str(args.slow)]
    argv += ["--big", str(args.big), "--bombs", str(args.bombs), "--nested", str(args.nested)]
    with PeakRss(stack.proc.pid) as rss:
        noise = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(3)  # the slow connections are open and the first big bodies on their way
            result = quiet_run(stack, *quiet, args, "noisy")
            out, _ = noise.communicate(timeout=args.duration + 120)
        finally:
            if noise.poll() is None:
                noise.kill()
                noise.wait()
    return result, json.loads(out), rss.peak_kib


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per run")
    parser.add_argument("--concurrency", type=int, default=4, help="the quiet tenant's connections")
    parser.add_argument("--slow", type=int, default=500, help="slow (slowloris) connections")
    parser.add_argument("--big", type=int, default=1, help="loops each sending 30 MB predict and v2 bodies")
    parser.add_argument("--bombs", type=int, default=1, help="loops sending 1 MB gzip bodies of 1 GiB")
    parser.add_argument("--nested", type=int, default=1, help="loops sending 240 KiB bodies of 100k lists")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Set up, measure alone and under noise, print, tear down."""
    args = parse_args(argv)
    print(f"machine: {report.machine()}")
    try:
        with control_plane() as stack:
            quiet = deploy(stack, tenant="quiet")
            noisy = deploy(stack, tenant="noisy")
            triton_pid = stack.triton_pid
            alone = quiet_run(stack, quiet.model, quiet.consumer_key, args, "alone")
            under, noise, peak_kib = noisy_run(
                stack, (quiet.model, quiet.consumer_key), (noisy.model, noisy.consumer_key), args
            )
            survived = stack.triton_group() and stack.triton_group()[0] == triton_pid
    except SetupError as exc:
        print(f"SETUP FAILED: {exc}", file=sys.stderr)
        return 2
    print(f"\nquiet tenant, {args.concurrency} connections, {args.duration:g} s per run:")
    print(f"{'':>14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, run in (("alone", alone), ("under noise", under)):
        print(f"{name:>14} {run['rps']:8.0f} {run['p50_ms']:8.2f} {run['p99_ms']:8.2f} {run['errors']:7d}")
    print(
        f"\nnoise ({args.slow} slow connections, {args.big}x 30 MB bodies, {args.bombs}x gzip bombs, "
        f"{args.nested}x nested 240 KiB bodies):"
    )
    print(json.dumps(noise, indent=2))
    print(f"control plane peak RSS under noise: {peak_kib / 1024:.0f} MiB")
    print(f"Triton survived (same pid {triton_pid}): {bool(survived)}")
    met = under["p99_ms"] < TARGET_P99_MS and under["errors"] == 0
    print(f"target quiet p99 < {TARGET_P99_MS:g} ms under noise: {'met' if met else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
