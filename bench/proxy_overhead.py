"""What the proxy adds: KServe v2 infer straight at Triton vs through the control plane, HTTP and gRPC.

    python -m bench.proxy_overhead [--protocol http|grpc|both] [--duration 5] [--rounds 3]
        [--concurrency 1,64] [--http-generators wrk,own] [--h2-connections 8]
        [--reference nginx] [--reference-workers 1]

Brings up its own control plane (SQLite registry, local artifacts, embedded Triton) in a temp dir,
deploys a small ONNX MLP (FP32 [-1, 4] -> [-1, 3]) behind `production`, then for each protocol,
load generator and concurrency alternates direct and proxied runs (each after an unmeasured
warm-up). HTTP: KServe v2 JSON infer, driven by wrk (2 threads) and by `bench.loadgen`. gRPC: unary
ModelInfer with a pre-framed request body (5-byte gRPC prefix), driven by h2load over `--h2-connections`
connections (the rest of the concurrency as streams on them). wrk and h2load are installed with apt-get
when missing. Prints throughput, latency percentiles, CPU of each process per request (from
/proc/<pid>/stat over each run), Triton's batch sizes, the proxied/direct ratios and the targets.
`--reference nginx` adds a third mode to every round: the same requests through a plain nginx reverse
proxy in front of Triton (`bench.reference_proxy`: keep-alive upstream, nothing checked), the cost of one
more process on the path on this machine whoever writes it.
Exit 0 even when a target is missed; 1 on request errors, 2 if setup failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from bench import generators, reference_proxy, report
from bench.generators import Run, Target
from bench.reference_proxy import Reference
from bench.stack import Deployment, SetupError, Stack, control_plane, deploy

X = [0.5, -1.0, 2.0, 0.25]
BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X}]}, separators=(",", ":")
).encode()
INFER = "/inference.GRPCInferenceService/ModelInfer"
ROLES = ("proxy", "triton", "rest")
TARGETS = {"http": (0.9, 0.3), "grpc": (0.8, 0.5)}  # (min ratio at c=64, max added p50 ms at c=1)
Generator = Callable[[Target, int, float, list[int], Path], Run]


def grpc_body(model: str) -> bytes:
    """A ModelInferRequest for `model` with its gRPC length prefix, as h2load sends it."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.outputs.add(name="y")
    request.raw_input_contents.append(np.array([X], dtype=np.float32).tobytes())
    message = request.SerializeToString()
    return b"\x00" + len(message).to_bytes(4, "big") + message


def targets(
    stack: Stack, deployment: Deployment, protocol: str, reference: Reference | None = None
) -> dict[str, Target]:
    """The direct (Triton) and proxied (control plane) endpoints of the deployed model, and the
    reference proxy's (which knows no tenant, key or alias: it is sent Triton's own name)."""
    key = f"authorization: Bearer {deployment.consumer_key}"
    if protocol == "grpc":
        triton_port = int(stack.triton_grpc_url.rsplit(":", 1)[1])
        to = {
            "direct": Target(triton_port, INFER, grpc_body(deployment.triton_name)),
            "proxy": Target(stack.grpc_port, INFER, grpc_body(deployment.model), [key]),
        }
        if reference is not None:
            to[reference.name] = Target(reference.grpc_port, INFER, grpc_body(deployment.triton_name))
        return to
    path = f"/v2/models/{deployment.triton_name}/infer"
    to = {
        "direct": Target(stack.triton_port, path, BODY),
        "proxy": Target(stack.cp_port, f"/v2/models/{deployment.model}/infer", BODY, [key]),
    }
    if reference is not None:
        to[reference.name] = Target(reference.http_port, path, BODY)
    return to


def validate(to: dict[str, Target], protocol: str) -> None:
    """One request each way, outside the timed runs: both answer, with the same outputs."""
    outputs = {}
    for mode, target in to.items():
        headers = dict(h.split(": ", 1) for h in target.headers)
        if protocol == "grpc":
            with grpc.insecure_channel(f"127.0.0.1:{target.port}") as channel:
                call = channel.unary_unary(INFER, response_deserializer=pb.ModelInferResponse.FromString)
                answer = call(target.body[5:], metadata=tuple(headers.items()), timeout=30)
            outputs[mode] = answer.raw_output_contents[0]
            continue
        headers["content-type"] = "application/json"
        url = f"http://127.0.0.1:{target.port}{target.path}"
        response = httpx.post(url, content=target.body, headers=headers, timeout=30, trust_env=False)
        if response.status_code != 200:
            raise SetupError(f"{protocol} {mode} infer: {response.status_code} {response.text}")
        outputs[mode] = response.json()["outputs"][0]["data"]
        if mode == "proxy":
            print(f"Server-Timing of a proxied response: {response.headers.get('server-timing')}")
    for mode, output in outputs.items():
        if output != outputs["direct"]:
            raise SetupError(f"{protocol} outputs differ: direct {outputs['direct']!r} vs {mode} {output!r}")


def triton_counts(stack: Stack, triton_name: str) -> tuple[int, int]:
    """Triton's (inference_count, execution_count) of the model, from its statistics extension."""
    with httpx.Client(timeout=30, trust_env=False) as client:
        stats = client.get(f"{stack.triton_url}/v2/models/{triton_name}/stats").json()
    model = stats["model_stats"][0]
    return int(model["inference_count"]), int(model["execution_count"])


def measure(
    stack: Stack,
    to: dict[str, Target],
    triton_name: str,
    generator: Generator,
    args: argparse.Namespace,
    label: str,
    reference: Reference | None = None,
) -> report.Results:
    """For each concurrency, `rounds` times direct then proxy (then the reference proxy), each after a
    warm-up run. The proxy role's CPU is the process the mode goes through (none for direct)."""
    proxies = {"direct": [], "proxy": [stack.proc.pid]}
    if reference is not None:
        proxies[reference.name] = reference.pids()
    triton = stack.triton_group()
    watch = [pid for pids in proxies.values() for pid in pids] + triton
    results: report.Results = {}
    for concurrency in args.concurrency:
        modes = results[concurrency] = {mode: report.Aggregate() for mode in to}
        for round_ in range(args.rounds):
            for mode in to:
                if args.warmup > 0:
                    generator(to[mode], concurrency, args.warmup, [], stack.tmp)
                before = triton_counts(stack, triton_name)
                run = generator(to[mode], concurrency, args.duration, watch, stack.tmp)
                after = triton_counts(stack, triton_name)
                served = after[0] - before[0]
                if served < run.result["requests"]:  # a gRPC error is an HTTP/2 200: count what Triton ran
                    missing = run.result["requests"] - served
                    run.result["errors"] += missing
                    run.result["first_error"] = run.result.get("first_error") or (
                        f"{missing} answers Triton never computed (gRPC errors)"
                    )
                cpu = {
                    "proxy": sum(run.cpu_s.get(pid, 0.0) for pid in proxies[mode]),
                    "triton": sum(run.cpu_s.get(pid, 0.0) for pid in triton),
                }
                cpu["rest"] = max(0.0, run.busy_s - cpu["proxy"] - cpu["triton"])
                modes[mode].add(run.result, run.latencies_ns, cpu)
                modes[mode].inferences += served
                modes[mode].executions += after[1] - before[1]
                p50 = run.result.get("p50_ms") or _p(run, 50)
                print(
                    f"  {label} c={concurrency:<3} round {round_ + 1} {mode:>6}: "
                    f"{run.result['rps']:8.0f} req/s, "
                    f"p50 {p50:.3f} ms, errors {run.result['errors']}",
                    flush=True,
                )
    return results


def _p(run: Run, q: float) -> float:
    return float(np.percentile(run.latencies_ns, q)) / 1e6


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=("http", "grpc", "both"), default="both")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each run")
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(c) for c in s.split(",") if c.strip()],
        default=[1, 64],
        help="comma-separated concurrencies (connections for HTTP, streams for gRPC)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="direct/proxy pairs per concurrency")
    parser.add_argument(
        "--http-generators", default="wrk,own", help="comma-separated: wrk, own (bench.loadgen)"
    )
    parser.add_argument("--h2-connections", type=int, default=8, help="h2load connections (gRPC)")
    parser.add_argument(
        "--reference",
        choices=("none", "nginx"),
        default="none",
        help="also measure a plain native reverse proxy in front of Triton (bench.reference_proxy)",
    )
    parser.add_argument(
        "--reference-workers", type=int, default=1, help="worker processes of the reference proxy"
    )
    return parser.parse_args(argv)


def plan(args: argparse.Namespace) -> list[tuple[str, str, Generator]]:
    """(protocol, generator name, generator) to run, in order."""
    runs: list[tuple[str, str, Generator]] = []
    if args.protocol in ("http", "both"):
        for name in [g.strip() for g in args.http_generators.split(",") if g.strip()]:
            runs.append(("http", name, {"wrk": generators.wrk, "own": generators.own}[name]))
    if args.protocol in ("grpc", "both"):

        def h2load(target: Target, concurrency: int, duration: float, watch: list[int], tmp: Path) -> Run:
            return generators.h2load(target, concurrency, duration, watch, tmp, args.h2_connections)

        runs.append(("grpc", "h2load", h2load))
    return runs


def summary(all_results: dict[tuple[str, str], report.Results]) -> bool:
    """One line per protocol and generator: the figures the targets are about."""
    print(f"{'protocol':>8} {'generator':>30} {'c=64 proxy/direct':>18} {'added p50 c=1':>14} "
          f"{'proxy cpu us/req c=64':>22} {'direct req/s c=64':>18} {'proxy req/s c=64':>17}")  # fmt: skip
    met = True
    nan = float("nan")
    for (protocol, name), results in all_results.items():
        min_ratio, max_added = TARGETS[protocol]
        modes = [m for m in next(iter(results.values()), {}) if m != "direct"]
        for mode in modes:  # the control plane first, then the reference proxy
            ratio = report.ratio(results, 64, mode) if 64 in results else nan
            added = nan
            if 1 in results:
                added = results[1][mode].percentile_ms(50) - results[1]["direct"].percentile_ms(50)
            cpu = results[64][mode].cpu_us_per_request("proxy") if 64 in results else nan
            direct = results[64]["direct"].rps if 64 in results else nan
            proxied = results[64][mode].rps if 64 in results else nan
            generator = name if mode == "proxy" else f"{name} via {mode} (reference)"
            print(
                f"{protocol:>8} {generator:>30} {ratio:>18.3f} {added:>11.3f} ms {cpu:>22.0f} "
                f"{direct:>18.0f} {proxied:>17.0f}"
            )
            if mode == "proxy":
                met &= not (ratio < min_ratio) and not (added > max_added)
    return met


def main(argv: list[str] | None = None) -> int:
    """Set up, measure, print, tear down."""
    args = parse_args(argv)
    print(f"machine: {report.machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    all_results: dict[tuple[str, str], report.Results] = {}
    try:
        runs = plan(args)
        for tool in {"wrk": "wrk", "h2load": "h2load"}.values():
            if any(name == tool for _, name, _ in runs):
                generators.ensure(tool)
        with ExitStack() as scope:
            stack = scope.enter_context(control_plane(grpc=args.protocol != "http"))
            deployment = deploy(stack)
            print(
                f"control plane pid {stack.proc.pid} on :{stack.cp_port} (gRPC :{stack.grpc_port}); "
                f"Triton pid {stack.triton_pid} at {stack.triton_url} (gRPC {stack.triton_grpc_url}); "
                f"model {deployment.model!r} -> {deployment.triton_name!r}"
            )
            reference = None
            if args.reference == "nginx":
                triton_grpc = int(stack.triton_grpc_url.rsplit(":", 1)[1])
                reference = scope.enter_context(
                    reference_proxy.nginx(
                        stack.tmp, stack.triton_port, triton_grpc, workers=args.reference_workers
                    )
                )
                print(
                    f"reference proxy nginx ({args.reference_workers} worker(s), pids {reference.pids()}) "
                    f"on :{reference.http_port} (gRPC :{reference.grpc_port})"
                )
            for protocol, name, generator in runs:
                to = targets(stack, deployment, protocol, reference)
                validate(to, protocol)
                label = f"{protocol}/{name}"
                all_results[(protocol, name)] = measure(
                    stack, to, deployment.triton_name, generator, args, label, reference
                )
    except (SetupError, generators.GeneratorMissing, RuntimeError, grpc.RpcError) as exc:
        print(f"SETUP FAILED: {exc}", file=sys.stderr)
        return 2
    met, errors = True, 0
    for (protocol, name), results in all_results.items():
        print(f"\n=== {protocol} with {name} ===")
        report.print_table(results, ROLES)
        # rest = the load generator (wrk/h2load: ~20-40% of a core at full rate) and everyone else
        report.print_contention(results, threshold=60.0, role="rest")
        report.print_cpu_per_request(results, ROLES[:2])
        min_ratio, max_added = TARGETS[protocol]
        met &= report.print_targets(results, min_ratio=min_ratio, max_added_p50_ms=max_added)
        errors += sum(agg.errors for modes in results.values() for agg in modes.values())
    print(
        "\n(cpu%: % of one core in the measured runs; triton includes its Python-backend stubs;"
        " rest: the load"
    )
    print(
        " generator and every other process on the machine. wrk p50/p99: median of the runs' own values.)\n"
    )
    met = summary(all_results) and met
    if errors:
        first = next(
            a.first_error
            for r in all_results.values()
            for m in r.values()
            for a in m.values()
            if a.first_error
        )
        print(f"BROKEN: {errors} request errors (first: {first})")
        return 1
    print("all targets met" if met else "NOT ALL TARGETS MET (benchmark result, not a failure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
