"""Residency under a Zipf load: many small models, a budget that holds about 10% of them.

    python -m bench.residency [--models 200] [--tenants 4] [--fraction 0.1] [--clients 16] [--seconds 60]
                              [--quiet 10] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Starts the control plane with its embedded bundled Triton (SQLite, or with `--postgres` a scratch
database on that server, as in production; local artifacts; `bench.stack`),
registers `--models` tiny Python-backend models spread over `--tenants` tenants (uploads do not load),
loads one to measure a model's memory (its stub process, as the control plane measures it), sets the
instance's budget through the instances API to hold `--fraction` of the models, then drives a
Zipf(`--zipf`) stream of KServe v2 infer requests (explicit version 1) from `--clients` threads for
`--seconds`. Prints: failed requests (and what they were told); the hit rate the control plane counted
(cp_residency_hits / misses) next to an ideal LRU of the same capacity simulated offline on the same
trace (the requests in the order they were sent), and where the two part (`compare_with_ideal`);
cold-start latency (requests the control plane answered after a load, told apart by latency: over 10x
the p10 latency and over 50 ms) p50/p99 next to Triton's own load time for these models
(`load_seconds` the control plane measured around each load call); warm p50/p99; evictions; and the
peak memory of the stub processes sampled every 20 ms next to the budget. Then (`--quiet N`, 10 by
default) N cold starts one at a time with nothing else running, each to a model that is not resident
while the budget is full: their latency next to their load time, the control plane's own cold-start
cost without the queueing of a saturated machine.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import threading
import time
from collections import Counter, OrderedDict
from contextlib import ExitStack
from pathlib import Path
from typing import NamedTuple

import httpx

from bench.loadgen import percentile_ms
from bench.stack import SetupError, control_plane, scratch_database
from control_plane.residency import sizes
from tests.support.triton_models import MODEL
from tests.support.v2 import server_timing

SPEC = {
    "format": "python",
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
    "max_batch_size": 0,
}
BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]}


def _ok(response: httpx.Response, code: int = 200) -> httpx.Response:
    if response.status_code != code:
        raise SetupError(
            f"{response.request.method} {response.request.url}: {response.status_code} {response.text}"
        )
    return response


def register(
    admin: httpx.Client, tmp: Path, *, models: int, tenants: int
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(tenant, model) pairs registered with one uploaded version each, and a consumer key per tenant."""
    keys: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for t in range(tenants):
        tenant = f"tenant{t}"
        _ok(admin.post("/v1/tenants", json={"name": tenant}), 201)
        keys[tenant] = _ok(admin.post(f"/v1/tenants/{tenant}/keys", json={"role": "consumer"}), 201).json()[
            "key"
        ]
    for i in range(models):
        tenant, name = f"tenant{i % tenants}", f"m{i}"
        _ok(admin.post(f"/v1/tenants/{tenant}/models", json={"name": name, **SPEC}), 201)
        source = tmp / f"{name}.py"
        source.write_text(MODEL.format(init="pass", scale=float(i + 1), offset=0.0))
        with source.open("rb") as f:
            _ok(admin.post(f"/v1/tenants/{tenant}/models/{name}/versions", files={"file": f}), 201)
        pairs.append((tenant, name))
    return pairs, keys


def zipf_weights(n: int, s: float) -> list[float]:
    """Zipf(s) weights of ranks 1..n."""
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def ideal_lru_hit_rate(trace: list[int], capacity: int) -> float:
    """Hit rate of an LRU cache of `capacity` models over `trace`."""
    cache: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for item in trace:
        if item in cache:
            hits += 1
            cache.move_to_end(item)
        else:
            cache[item] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits / len(trace) if trace else float("nan")


def compare_with_ideal(
    records: list[tuple[float, int, int, int]], capacity: int, threshold_ns: float
) -> tuple[int, int, int]:
    """Where the measured hit rate parts from the ideal LRU's, request by request: (ideal hits that
    waited here because the model's load was already under way for an earlier request, the other ideal
    hits that waited here, ideal misses answered warm here). The first kind is the cost of load time
    (the ideal loads instantly), the other two that of the eviction choices."""
    cache: OrderedDict[int, None] = OrderedDict()
    loading_until: dict[int, float] = {}  # model -> when the cold request that started its load ended
    joined = missed = gained = 0
    for started, index, status, latency_ns in records:
        ideal_hit = index in cache
        if ideal_hit:
            cache.move_to_end(index)
        else:
            cache[index] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
        cold = status == 200 and latency_ns > threshold_ns
        if cold and started < loading_until.get(index, 0.0):
            joined += ideal_hit
        elif cold:
            loading_until[index] = started + latency_ns / 1e9
            missed += ideal_hit
        elif status == 200 and not ideal_hit:
            gained += 1
    return joined, missed, gained


PASSES = "cp_reconcile_passes_total"
EVICTIONS = "cp_residency_evictions_total"
PERIOD_S = float(os.environ.get("CP_RECONCILE_INTERVAL_S", "5"))


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples in a Prometheus text exposition."""
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def metric_by(text: str, name: str, label: str) -> Counter[str]:
    """A metric's samples summed by the value of one of its labels."""
    found: Counter[str] = Counter()
    for m in re.finditer(rf"^{name}{{([^}}]*)}} (\S+)$", text, re.M):
        value = re.search(rf'(?:^|,){label}="([^"]*)"', m.group(1))
        if value is not None:
            found[value.group(1)] += round(float(m.group(2)))  # counters
    return found


class Sampler(threading.Thread):
    """The stub processes' memory under a Triton, every 20 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, sum(sizes.rss(p) for p in sizes.processes(self.pid)))


def drive(
    base: str, pairs: list[tuple[str, str]], keys: dict[str, str], *, clients: int, seconds: float, s: float
) -> tuple[list[tuple[float, int, int, int]], Counter[str]]:
    """(start, model index, status, latency ns) of every request, from `clients` threads; and what the
    failed ones were told, how often."""
    order = list(range(len(pairs)))
    random.Random(7).shuffle(order)  # which model gets which popularity rank
    weights = zipf_weights(len(pairs), s)
    records: list[tuple[float, int, int, int]] = []
    lock = threading.Lock()
    reasons: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine: list[tuple[float, int, int, int]] = []
        told: Counter[str] = Counter()
        with httpx.Client(base_url=base, timeout=120, trust_env=False) as http:
            while time.monotonic() < deadline:
                index = order[rng.choices(range(len(pairs)), weights)[0]]
                tenant, name = pairs[index]
                started = time.monotonic()
                began = time.perf_counter_ns()
                try:
                    response = http.post(
                        f"/v2/models/{name}/versions/1/infer",
                        json=BODY,
                        headers={"Authorization": f"Bearer {keys[tenant]}"},
                    )
                    status = response.status_code
                    if status != 200:
                        told[f"{status} {name}: {response.text[:200]}"] += 1
                except httpx.HTTPError as exc:
                    status = 0
                    told[f"{name}: {exc!r}"] += 1
                mine.append((started, index, status, time.perf_counter_ns() - began))
        with lock:
            records.extend(mine)
            reasons.update(told)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(records), reasons


class ColdStart(NamedTuple):
    """One quiet cold start (`quiet_cold_starts`), in seconds."""

    latency: float  # as the client saw it
    load: float  # Triton's load time (`load_seconds`, measured around the load call)
    waited: float  # the request's wait for its version (Server-Timing `load`)
    triton: float  # Triton's time for the request itself (Server-Timing `triton`)
    gateway: float  # the control plane's own work on the request (Server-Timing `gateway`)


def quiet_cold_starts(
    base: str, admin: httpx.Client, pairs: list[tuple[str, str]], keys: dict[str, str], *, count: int
) -> list[ColdStart]:
    """`count` requests sent one at a time with nothing else running, each to a model that is not
    resident while the budget is full (so each one's load also needs an eviction first): the control
    plane's own cold-start cost, without the queueing of a saturated machine. The answer's Server-Timing
    splits it: the wait for the load (Triton's load time and the control plane's placement, eviction and
    marking it ready around it), Triton's time for the request (a Python-backend model's first inference
    after its load is slow: its stub imports asyncio then, a cost that is neither the load nor the
    control plane's) and the control plane's own work on the request."""
    found: list[ColdStart] = []
    with httpx.Client(base_url=base, timeout=120, trust_env=False) as http:
        for tenant, name in pairs:
            if len(found) >= count:
                break
            detail = f"/v1/tenants/{tenant}/models/{name}/versions/1"
            if _ok(admin.get(detail)).json().get("resident_on"):
                continue
            _settle(admin)
            began = time.perf_counter()
            response = http.post(
                f"/v2/models/{name}/versions/1/infer",
                json=BODY,
                headers={"Authorization": f"Bearer {keys[tenant]}"},
            )
            latency = time.perf_counter() - began
            if response.status_code != 200:
                raise SetupError(f"quiet cold start of {name}: {response.status_code} {response.text[:200]}")
            timing = response.headers.get("server-timing", "")
            found.append(
                ColdStart(
                    latency,
                    float(_ok(admin.get(detail)).json()["load_seconds"]),
                    timing_seconds(timing, "load"),
                    timing_seconds(timing, "triton"),
                    timing_seconds(timing, "gateway"),
                )
            )
    return found


def timing_seconds(header: str, name: str) -> float:
    """The `<name>;dur=` entry of a Server-Timing header, in seconds (0 when absent)."""
    return server_timing(header).get(name, 0.0) / 1000


def _settle(admin: httpx.Client, timeout: float = 30.0) -> None:
    """Wait until no load runs and the evictions of the last request are over (then a moment more)."""
    deadline = time.monotonic() + timeout
    while metric(admin.get("/metrics").text, "cp_residency_loads_in_flight") > 0:
        if time.monotonic() > deadline:
            raise SetupError("loads still running")
        time.sleep(0.1)
    time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--quiet", type=int, default=10, help="cold starts one at a time after the run")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="registry on this Postgres server (a scratch database is created and dropped), not SQLite",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("CP_COLD_START_WAIT_S", "60")
    # No room kept free ahead of loads (CP_RESIDENCY_HEADROOM_BYTES): the whole budget holds models, as
    # the ideal LRU it is compared with does; evictions happen just in time.
    with ExitStack() as stack:
        database_url = stack.enter_context(scratch_database(args.postgres)) if args.postgres else None
        cp = stack.enter_context(control_plane(grpc=False, database_url=database_url))
        print(f"registry: {'Postgres (' + args.postgres + ')' if args.postgres else 'SQLite'}")
        admin = cp.admin
        t0 = time.monotonic()
        pairs, keys = register(admin, cp.tmp, models=args.models, tenants=args.tenants)
        print(f"registered {len(pairs)} models for {args.tenants} tenants in {time.monotonic() - t0:.1f} s")
        tenant, name = pairs[0]
        first = _ok(admin.post(f"/v1/tenants/{tenant}/models/{name}/versions/1/load", timeout=120)).json()
        size = int(first["memory_bytes"] or 0)
        if not size:
            raise SetupError(f"the first model's memory was not measured: {first}")
        capacity = max(1, round(args.models * args.fraction))
        budget = int(size * (capacity + 0.5))
        instance = admin.get("/v1/instances").json()[0]["name"]
        _ok(admin.put(f"/v1/instances/{instance}", json={"memory_budget_bytes": budget}))
        print(
            f"one model: {size / 2**20:.1f} MiB (stub RSS); "
            f"budget {budget / 2**20:.0f} MiB = {capacity} models"
        )
        before = admin.get("/metrics").text
        sampler = Sampler(cp.triton_pid)
        sampler.start()
        records, reasons = drive(
            f"http://127.0.0.1:{cp.cp_port}",
            pairs,
            keys,
            clients=args.clients,
            seconds=args.seconds,
            s=args.zipf,
        )
        sampler.stop.set()
        sampler.join()
        after = admin.get("/metrics").text
        loads = _load_seconds(admin, pairs)
        report(args, records, reasons, before, after, loads, capacity, budget, sampler.peak, size)
        if args.quiet:
            before = admin.get("/metrics").text
            found = quiet_cold_starts(f"http://127.0.0.1:{cp.cp_port}", admin, pairs, keys, count=args.quiet)
            report_quiet(found)
            passes = metric(admin.get("/metrics").text, PASSES) - metric(before, PASSES)
            print(
                f"  reconcile passes meanwhile: {passes:.0f} for {len(found)} cold starts "
                f"(the loop's own period, {PERIOD_S:.0f} s, included)"
            )
    return 0


def _load_seconds(admin: httpx.Client, pairs: list[tuple[str, str]]) -> list[float]:
    found = []
    for tenant, name in pairs:
        detail = admin.get(f"/v1/tenants/{tenant}/models/{name}/versions/1").json()
        if detail.get("load_seconds"):
            found.append(float(detail["load_seconds"]))
    return sorted(found)


def report(
    args: argparse.Namespace,
    records: list[tuple[float, int, int, int]],
    reasons: Counter[str],
    before: str,
    after: str,
    loads: list[float],
    capacity: int,
    budget: int,
    peak: int,
    size: int,
) -> None:
    """Print the figures (see the module docstring)."""
    failed = [r for r in records if r[2] != 200]
    hits = metric(after, "cp_residency_hits_total") - metric(before, "cp_residency_hits_total")
    misses = metric(after, "cp_residency_misses_total") - metric(before, "cp_residency_misses_total")
    evictions = metric(after, EVICTIONS) - metric(before, EVICTIONS)
    trace = [r[1] for r in records]
    ok_ns = sorted(r[3] for r in records if r[2] == 200)
    fastest_ns = ok_ns[len(ok_ns) // 10] if ok_ns else 0  # p10: a warm request whatever the miss rate
    threshold = max(50_000_000, 10 * fastest_ns)
    cold = sorted(r[3] for r in records if r[2] == 200 and r[3] > threshold)
    warm = sorted(r[3] for r in records if r[2] == 200 and r[3] <= threshold)
    raw = sorted(int(s * 1e9) for s in loads)
    print(
        f"requests: {len(records)} in {args.seconds:.0f} s from {args.clients} clients, Zipf({args.zipf}) "
        f"over {args.models} models ({len(set(trace))} distinct requested)"
    )
    print(
        f"failed requests: {len(failed)}"
        + (f" (statuses {sorted({r[2] for r in failed})})" if failed else "")
    )
    for reason, count in reasons.most_common(5):
        print(f"  {count} x {reason}")
    measured = hits / (hits + misses) if hits + misses else float("nan")
    print(
        f"hit rate: {measured:.1%} (control plane: {hits:.0f} hits, {misses:.0f} misses); "
        f"ideal LRU of {capacity} models on the same trace: {ideal_lru_hit_rate(trace, capacity):.1%}"
    )
    joined, missed, gained = compare_with_ideal(records, capacity, threshold)
    print(
        f"  against the ideal: {joined} of its hits waited here for a load already under way for an "
        f"earlier request (the ideal loads instantly), {missed} others waited here, {gained} of its "
        f"misses were answered warm here"
    )
    print(
        f"cold start: p50 {percentile_ms(cold, 50):.0f} ms, p99 {percentile_ms(cold, 99):.0f} ms "
        f"({len(cold)} requests over {threshold / 1e6:.0f} ms); Triton's own load time for these models: "
        f"p50 {percentile_ms(raw, 50):.0f} ms, p99 {percentile_ms(raw, 99):.0f} ms ({len(raw)} models loaded)"
    )
    print(
        f"warm: p50 {percentile_ms(warm, 50):.1f} ms, p99 {percentile_ms(warm, 99):.1f} ms "
        f"({len(warm)} requests)"
    )
    passes = metric(after, PASSES) - metric(before, PASSES)
    why = metric_by(after, EVICTIONS, "reason")
    why.subtract(metric_by(before, EVICTIONS, "reason"))
    by_reason = ", ".join(f"{count:.0f} {reason}" for reason, count in why.most_common() if count)
    print(
        f"evictions: {evictions:.0f}"
        + (f" ({by_reason})" if by_reason else "")
        + f"; reconcile passes: {passes:.0f} ({passes / args.seconds:.1f}/s)"
    )
    print(
        f"peak resident (stub RSS, sampled every 20 ms): {peak / 2**20:.0f} MiB "
        f"of a {budget / 2**20:.0f} MiB "
        f"budget ({'within' if peak <= budget else 'ABOVE'}; one model {size / 2**20:.1f} MiB)"
    )


def report_quiet(found: list[ColdStart]) -> None:
    """Print the quiet cold starts (`quiet_cold_starts`)."""
    if not found:
        print("quiet cold starts: none (every model resident)")
        return

    def p50(values: list[float]) -> float:
        return percentile_ms(sorted(int(v * 1e9) for v in values), 50)

    latencies = sorted(c.latency for c in found)
    loads = sorted(c.load for c in found)
    ratios = sorted(c.latency / c.load for c in found if c.load > 0)
    print(
        f"cold start alone ({len(found)} requests one at a time, each needing an eviction): "
        f"p50 {p50(latencies):.0f} ms, max {latencies[-1] * 1e3:.0f} ms; Triton's load time "
        f"of those models p50 {p50(loads):.0f} ms, max {loads[-1] * 1e3:.0f} ms; "
        f"cold start / load time p50 {ratios[len(ratios) // 2]:.2f}x (target 1.2x)"
    )
    print(
        f"  where the time went (p50s, the answer's Server-Timing): waiting for the load "
        f"{p50([c.waited for c in found]):.0f} ms, of which around Triton's load (placement, eviction, "
        f"marking it ready) {p50([c.waited - c.load for c in found]):.0f} ms; Triton's first inference "
        f"after the load {p50([c.triton for c in found]):.0f} ms; the control plane's own work on the "
        f"request {p50([c.gateway for c in found]):.1f} ms; HTTP and client "
        f"{p50([c.latency - c.waited - c.triton - c.gateway for c in found]):.1f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
