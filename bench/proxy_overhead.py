"""What the proxy adds: KServe v2 infer straight at Triton vs through the control plane.

    python -m bench.proxy_overhead [--duration 10] [--concurrency 1,16,64] [--rounds 3]

Brings up its own control plane (SQLite registry, local artifacts, embedded Triton) in a temp dir,
deploys a small ONNX MLP behind `production`, then for each concurrency alternates direct and
proxied runs of a closed-loop load generator running in a separate process. Prints throughput,
latency percentiles, errors and the CPU of each process, the proxied/direct ratios and whether the
targets are met. Exit 0 even when a target is missed; 1 on request errors, 2 if setup failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import report
from bench.stack import Deployment, SetupError, Stack, control_plane, deploy

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]},
    separators=(",", ":"),
).encode()
ROLES = ("proxy", "triton", "loadgen", "other")


class Target:
    """Where one mode sends its requests."""

    def __init__(self, port: int, path: str, headers: list[str]) -> None:
        self.port = port
        self.path = path
        self.headers = headers


def targets(stack: Stack, deployment: Deployment) -> dict[str, Target]:
    """The direct (Triton) and proxied (control plane) endpoints of the deployed model."""
    return {
        "direct": Target(stack.triton_port, f"/v2/models/{deployment.triton_name}/infer", []),
        "proxy": Target(
            stack.cp_port,
            f"/v2/models/{deployment.model}/infer",
            [f"Authorization: Bearer {deployment.consumer_key}"],
        ),
    }


def validate(to: dict[str, Target]) -> str:
    """One request each way, outside the timed loop: same outputs; return the proxy's Server-Timing."""
    outputs = {}
    server_timing = ""
    with httpx.Client(timeout=30, trust_env=False) as client:
        for mode, target in to.items():
            headers = dict(h.split(": ", 1) for h in target.headers)
            headers["Content-Type"] = "application/json"
            url = f"http://127.0.0.1:{target.port}{target.path}"
            response = client.post(url, content=BODY, headers=headers)
            if response.status_code != 200:
                raise SetupError(f"{mode} infer: {response.status_code} {response.text}")
            outputs[mode] = {o["name"]: o["data"] for o in response.json()["outputs"]}
            if mode == "proxy":
                server_timing = response.headers.get("server-timing", "(none)")
    if outputs["direct"] != outputs["proxy"]:
        raise SetupError(f"outputs differ: direct {outputs['direct']} vs proxy {outputs['proxy']}")
    print(f"outputs match: {outputs['direct']}")
    return server_timing


def load(
    target: Target, concurrency: int, args: argparse.Namespace, stack: Stack, body_file: Path, out: Path
) -> tuple[dict[str, Any], np.ndarray, dict[str, float]]:
    """One load-generator run in its own process: its summary, latencies (ns) and CPU s per role."""
    triton_group = stack.triton_group()
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(target.port), "--path", target.path]
    argv += ["--body-file", str(body_file), "--concurrency", str(concurrency)]
    argv += ["--duration", str(args.duration), "--warmup", str(args.warmup), "--latencies-out", str(out)]
    for header in target.headers:
        argv += ["--header", header]
    for pid in [stack.proc.pid, *triton_group]:
        argv += ["--watch-pid", str(pid)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=args.duration + 120)
    if done.returncode != 0:
        raise SetupError(f"load generator failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    cpu = {int(pid): float(s) for pid, s in result["cpu_s"].items()}
    by_role = {
        "loadgen": next(iter(cpu.values())),
        "proxy": cpu.get(stack.proc.pid, 0.0),
        "triton": sum(cpu.get(pid, 0.0) for pid in triton_group),
    }
    by_role["other"] = max(0.0, float(result["system_busy_s"]) - sum(by_role.values()))
    return result, np.fromfile(out, dtype=np.int64), by_role


def triton_counts(stack: Stack, triton_name: str) -> tuple[int, int]:
    """Triton's (inference_count, execution_count) of the model, from its statistics extension."""
    with httpx.Client(timeout=30, trust_env=False) as client:
        stats = client.get(f"{stack.triton_url}/v2/models/{triton_name}/stats").json()
    model = stats["model_stats"][0]
    return int(model["inference_count"]), int(model["execution_count"])


def measure(
    stack: Stack, to: dict[str, Target], triton_name: str, args: argparse.Namespace
) -> report.Results:
    """For each concurrency, `rounds` times direct then proxy."""
    body_file = stack.tmp / "body.json"
    body_file.write_bytes(BODY)
    results: report.Results = {}
    for concurrency in args.concurrency:
        modes = results[concurrency] = {mode: report.Aggregate() for mode in report.MODES}
        for round_ in range(args.rounds):
            for mode in report.MODES:
                out = stack.tmp / f"lat-{concurrency}-{mode}-{round_}.bin"
                before = triton_counts(stack, triton_name)
                result, latencies, cpu = load(to[mode], concurrency, args, stack, body_file, out)
                after = triton_counts(stack, triton_name)
                modes[mode].add(result, latencies, cpu)
                modes[mode].inferences += after[0] - before[0]
                modes[mode].executions += after[1] - before[1]
                print(
                    f"  c={concurrency:<3} round {round_ + 1} {mode:>6}: {result['rps']:8.0f} req/s, "
                    f"p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms, "
                    f"errors {result['errors']}",
                    flush=True,
                )
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(c) for c in s.split(",") if c.strip()],
        default=[1, 16, 64],
        help="comma-separated connection counts",
    )
    parser.add_argument("--rounds", type=int, default=3, help="direct/proxy pairs per concurrency")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, print, tear down."""
    args = parse_args(argv)
    print(f"machine: {report.machine()}")
    try:
        with control_plane() as stack:
            deployment = deploy(stack)
            print(
                f"control plane pid {stack.proc.pid} on :{stack.cp_port}; Triton pid {stack.triton_pid} "
                f"at {stack.triton_url}; model {deployment.model!r} -> {deployment.triton_name!r}"
            )
            to = targets(stack, deployment)
            server_timing = validate(to)
            print(f"Server-Timing of a proxied response: {server_timing}")
            results = measure(stack, to, deployment.triton_name, args)
    except SetupError as exc:
        print(f"SETUP FAILED: {exc}", file=sys.stderr)
        return 2
    print()
    report.print_table(results, ROLES)
    print(
        "(cpu%: CPU used in the measured windows, in % of one core; triton includes its Python-backend"
        " stubs; other: every other process on the machine)"
    )
    report.print_contention(results)
    print()
    report.print_cpu_per_request(results, ROLES[:3])
    print()
    met = report.print_targets(results)
    errors = sum(agg.errors for modes in results.values() for agg in modes.values())
    if errors:
        first = next(a.first_error for m in results.values() for a in m.values() if a.first_error)
        print(f"BROKEN: {errors} request errors (first: {first})")
        return 1
    print("all targets met" if met else "NOT ALL TARGETS MET (benchmark result, not a failure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
