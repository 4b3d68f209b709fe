"""Aggregation of load-generator runs per mode, and the printed table, ratios and targets."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TARGET_RATIO = 0.8  # proxied/direct throughput at the highest concurrency
TARGET_ADDED_P50_MS = 1.0  # proxied p50 - direct p50 at concurrency 1


@dataclass
class Aggregate:
    """All runs of one mode at one concurrency: summed counts, pooled latencies, CPU per role."""

    requests: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    latencies: list[np.ndarray] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    first_error: str = ""
    inferences: int = 0  # Triton's inference_count delta over the runs (warmups included)
    executions: int = 0  # Triton's execution_count delta: batches actually run
    run_percentiles: list[dict[str, float]] = field(default_factory=list)  # a generator's own (wrk)

    @property
    def avg_batch(self) -> float:
        """Mean batch size Triton's dynamic batcher formed."""
        return self.inferences / self.executions if self.executions else float("nan")

    def add(self, result: dict[str, Any], latencies: np.ndarray, cpu_by_role: dict[str, float]) -> None:
        """Fold in one load-generator run."""
        self.requests += int(result["requests"])
        self.errors += int(result["errors"])
        self.elapsed_s += float(result["elapsed_s"])
        self.first_error = self.first_error or str(result.get("first_error") or "")
        self.latencies.append(latencies)
        self.run_percentiles.append({k: float(v) for k, v in result.items() if k.endswith("_ms")})
        for role, seconds in cpu_by_role.items():
            self.cpu_s[role] = self.cpu_s.get(role, 0.0) + seconds

    @property
    def rps(self) -> float:
        """Throughput over all runs: total requests / total measured time."""
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        """Percentile of the pooled latencies in ms."""
        pooled = np.concatenate(self.latencies) if self.latencies else np.empty(0, dtype=np.int64)
        if pooled.size:
            return float(np.percentile(pooled, q)) / 1e6
        # no raw latencies (wrk reports its own percentiles): the median of the runs' values
        values = [run[f"p{q:g}_ms"] for run in self.run_percentiles if f"p{q:g}_ms" in run]
        return float(np.median(values)) if values else float("nan")

    def cpu_us_per_request(self, role: str) -> float:
        """CPU used by `role` per completed request, in microseconds."""
        return 1e6 * self.cpu_s.get(role, 0.0) / self.requests if self.requests else float("nan")

    def cpu_percent(self, role: str) -> float:
        """CPU used by `role` during the measured windows, in % of one core."""
        return 100 * self.cpu_s.get(role, 0.0) / self.elapsed_s if self.elapsed_s else 0.0


Results = dict[int, dict[str, Aggregate]]


def machine() -> str:
    """nproc and the CPU model."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}"


def print_table(results: Results, roles: Sequence[str]) -> None:
    """Per concurrency and mode: throughput, latency percentiles, errors, CPU of each process."""
    cpu_head = "".join(f"{'cpu% ' + r:>13}" for r in roles)
    head = f"{'conc':>5} {'mode':>7} {'req/s':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}"
    print(head + cpu_head)
    for concurrency, modes in results.items():
        for mode, agg in modes.items():
            cpu = "".join(f"{agg.cpu_percent(r):>13.0f}" for r in roles)
            print(
                f"{concurrency:>5} {mode:>7} {agg.rps:>10.0f} {agg.percentile_ms(50):>8.3f} "
                f"{agg.percentile_ms(90):>8.3f} {agg.percentile_ms(99):>8.3f} {agg.errors:>7}{cpu}"
            )
    print()
    print(f"{'conc':>5} {'mode':>7} {'mode/direct req/s':>18} {'added p50 ms':>13} {'added p99 ms':>13}")
    for concurrency, modes in results.items():
        direct = modes["direct"]
        for mode, agg in modes.items():
            if mode != "direct":
                print(
                    f"{concurrency:>5} {mode:>7} {ratio(results, concurrency, mode):>18.3f} "
                    f"{agg.percentile_ms(50) - direct.percentile_ms(50):>13.3f} "
                    f"{agg.percentile_ms(99) - direct.percentile_ms(99):>13.3f}"
                )


def print_cpu_per_request(results: Results, roles: Sequence[str]) -> None:
    """CPU microseconds per request of each benchmarked process: what bounds throughput when CPU-bound."""
    head = "".join(f"{'cpu us/req ' + r:>19}" for r in roles)
    print(f"{'conc':>5} {'mode':>7}{head} {'triton avg batch':>17}")
    for concurrency, modes in results.items():
        for mode, agg in modes.items():
            values = "".join(f"{agg.cpu_us_per_request(r):>19.0f}" for r in roles)
            print(f"{concurrency:>5} {mode:>7}{values} {agg.avg_batch:>17.2f}")


def print_contention(results: Results, *, threshold: float = 25.0, role: str = "other") -> None:
    """Warn when processes outside the benchmark (`role`) used noticeable CPU in the measured windows."""
    runs = [agg for modes in results.values() for agg in modes.values()]
    busy = sum(agg.cpu_s.get(role, 0.0) for agg in runs)
    elapsed = sum(agg.elapsed_s for agg in runs)
    share = 100 * busy / elapsed if elapsed else 0.0
    if share > threshold:
        print(f"WARNING: {role} used {share:.0f}% of a core on average: figures are contended")


def ratio(results: Results, concurrency: int, mode: str = "proxy") -> float:
    """`mode`'s throughput (the control plane's by default) / direct throughput at `concurrency`."""
    direct = results[concurrency]["direct"].rps
    return results[concurrency][mode].rps / direct if direct else float("nan")


def print_targets(
    results: Results, *, min_ratio: float = TARGET_RATIO, max_added_p50_ms: float = TARGET_ADDED_P50_MS
) -> bool:
    """Say whether each target is met (a target whose concurrency was not run is skipped)."""
    met = True
    if 64 in results:
        value = ratio(results, 64)
        ok = value >= min_ratio
        met &= ok
        print(f"target: proxied/direct req/s >= {min_ratio} at concurrency 64: {value:.3f} -> {_word(ok)}")
    else:
        print("target: throughput ratio at concurrency 64: not run")
    if 1 in results:
        added = results[1]["proxy"].percentile_ms(50) - results[1]["direct"].percentile_ms(50)
        ok = added <= max_added_p50_ms
        met &= ok
        print(f"target: added p50 <= {max_added_p50_ms} ms at concurrency 1: {added:.3f} ms -> {_word(ok)}")
    else:
        print("target: added p50 at concurrency 1: not run")
    return met


def _word(ok: bool) -> str:
    return "met" if ok else "MISSED"
