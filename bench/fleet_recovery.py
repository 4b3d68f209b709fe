"""Fleet recovery: how fast a restarted Triton gets its placements back, and what the loop costs at rest.

    python -m bench.fleet_recovery [--models 50] [--placements 500] [--instances 5] [--passes 20]

1. Restart: a real bundled Triton with `--models` Python-backend models placed on it (the real
   reconcile loop and loader, a registry on SQLite, artifacts and repository in folders). Its process
   group is SIGKILLed and it is started again on the same ports (what the supervisor does, which then
   triggers a pass); printed: the time from its restart until every placement is ready again.
2. Steady state: `--placements` placements on `--instances` instances, once everything is in place:
   wall and CPU time of each pass (all threads of this process: probes, policy, SQL) and the share of
   one core at the default period. The instances are stand-ins (bench/fake_triton.py) answering
   health, repository index, load and unload over HTTP as Triton does, because a real Triton spends a
   Python stub process (~100 MB) per Python-backend model: 500 would need ~50 GB.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from control_plane.artifacts.local import LocalArtifactStore
from control_plane.db import migrate
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.fleet.instances import TritonEndpoint, register_instances
from control_plane.fleet.loader import VersionLoader
from control_plane.fleet.reconciler import Reconciler
from control_plane.modelrepo.folder import FolderModelRepository
from control_plane.tritonserver import TritonProcess, free_port
from tests.support import builders, procs
from tests.support.triton_models import CONFIG, MODEL

DEFAULT_INTERVAL_S = 5.0


@dataclass
class Registry:
    """A registry of its own: SQLite, a folder of artifacts and a folder repository."""

    url: str
    session_factory: sessionmaker[Session]
    artifacts: LocalArtifactStore
    repository: FolderModelRepository

    def add_versions(self, count: int, *, tenant: str) -> list[str]:
        """`count` ready Python-backend versions (one tiny artifact, stored once); their Triton names."""
        source = MODEL.format(init="pass", scale=2.0, offset=0.0).encode()
        stored = self.artifacts.put(io.BytesIO(source))
        names = []
        with transaction(self.session_factory) as session:
            owner = builders.tenant(session, name=tenant)
            for index in range(count):
                model = builders.model(session, tenant_row=owner, name=f"m{index}", format="python")
                name = f"{tenant}--m{index}--{model.id}--v1"
                builders.version(
                    session,
                    model_row=model,
                    triton_name=name,
                    sha256=stored.sha256,
                    artifact_uri=self.artifacts.uri_for(stored.sha256),
                    size_bytes=len(source),
                    config_text=CONFIG.format(name=name),
                    state="ready",
                )
                names.append(name)
        return names


def make_registry(root: Path) -> Registry:
    url = f"sqlite:///{root / 'registry.db'}"
    migrate.upgrade(url)
    return Registry(
        url=url,
        session_factory=make_session_factory(make_engine(url, pool_size=4)),
        artifacts=LocalArtifactStore(root / "artifacts"),
        repository=FolderModelRepository(root / "repository"),
    )


def endpoint(name: str, http_url: str, grpc_url: str, *, over_grpc: bool) -> TritonEndpoint:
    return TritonEndpoint.connect(
        name=name,
        http_url=http_url,
        grpc_url=grpc_url,
        timeout_s=10,
        load_timeout_s=300,
        health_timeout_s=2,
        load_over_grpc=over_grpc,
    )


@contextmanager
def reconciling(
    registry: Registry, endpoints: list[TritonEndpoint], **options: float
) -> Iterator[Reconciler]:
    """The real loader and loop over `endpoints` (registered as instances), stopped afterwards."""
    with transaction(registry.session_factory) as session:
        register_instances(session, endpoints)
    loader = VersionLoader(
        session_factory=registry.session_factory,
        artifacts=registry.artifacts,
        repository=registry.repository,
        tritons=endpoints,
    )
    reconciler = Reconciler(
        session_factory=registry.session_factory,
        loader=loader,
        tritons=endpoints,
        database_url=registry.url,
        **{"interval_s": 3600.0, **options},  # type: ignore[arg-type]
    )
    try:
        yield reconciler
    finally:
        reconciler.stop()
        loader.shutdown()
        for e in endpoints:
            e.close()


def ready_count(target: TritonEndpoint, names: list[str]) -> int:
    try:
        index = {m["name"]: m.get("state") for m in target.health.repository_index()}
    except Exception:  # down, or restarting
        return 0
    return sum(index.get(name) == "READY" for name in names)


def wait_all_ready(target: TritonEndpoint, names: list[str], timeout: float) -> float:
    started = time.monotonic()
    while ready_count(target, names) < len(names):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"only {ready_count(target, names)}/{len(names)} ready after {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def restart_recovery(root: Path, models: int, loads: int) -> None:
    """Part 1: a real Triton SIGKILLed and started again; time until its placements are all ready."""
    registry = make_registry(root)
    names = registry.add_versions(models, tenant="restart")
    triton = TritonProcess(repository=str(registry.repository.root), workdir=root / "triton")
    triton.start(timeout_s=120)
    try:
        target = endpoint("t1", triton.http_url, triton.grpc_url, over_grpc=True)
        options = {"interval_s": DEFAULT_INTERVAL_S, "loads_per_instance": loads}
        with reconciling(registry, [target], **options) as reconciler:
            started = time.monotonic()
            reconciler.start(wait_s=600)
            wait_all_ready(target, names, 600)
            first_s = time.monotonic() - started
            pid = triton.pid
            assert pid is not None
            os.killpg(pid, signal.SIGKILL)
            killed = time.monotonic()
            while not triton.has_exited():
                time.sleep(0.01)
            triton.start(timeout_s=120)  # reaps the dead group, same ports
            up = time.monotonic()
            reconciler.trigger()  # as the supervisor's restart hook does
            back_s = wait_all_ready(target, names, 600)
        print(
            f"restart: {models} Python-backend models on one bundled Triton ({loads} loads at a time): "
            f"first load {first_s:.1f} s; SIGKILL -> Triton up again {up - killed:.1f} s -> "
            f"all {models} placements ready {back_s:.1f} s later "
            f"({time.monotonic() - killed:.1f} s from the kill)"
        )
    finally:
        triton.stop()


def steady_state(root: Path, placements: int, instances: int, passes: int) -> None:
    """Part 2: the loop's own cost per pass with `placements` in place on stand-in instances."""
    registry = make_registry(root)
    registry.add_versions(placements, tenant="steady")
    ports = [free_port() for _ in range(instances)]
    fakes = [
        procs.start([sys.executable, "-m", "bench.fake_triton", str(port)], log=root / f"fake-{port}.log")
        for port in ports
    ]
    try:
        for port, fake in zip(ports, fakes, strict=True):
            procs.wait_for_port(port, timeout=30, proc=fake)
        targets = [
            endpoint(f"fake{i}", f"http://127.0.0.1:{port}", "127.0.0.1:1", over_grpc=False)
            for i, port in enumerate(ports)
        ]
        with reconciling(registry, targets, loads_per_instance=4) as reconciler:
            started = time.monotonic()
            for _ in range(3):  # place and load, then see them ready and record it
                reconciler.run_pass(wait_s=600)
            placed_s = time.monotonic() - started
            loaded = sum(len(t.health.repository_index()) for t in targets)
            if loaded != placements or any(reconciler.observed.drift.values()):
                raise SystemExit(f"not settled: {loaded} loaded, drift {reconciler.observed.drift}")
            wall, cpu = [], []
            for _ in range(passes):
                c0, w0 = time.process_time(), time.perf_counter()
                reconciler.run_pass()
                cpu.append(time.process_time() - c0)
                wall.append(time.perf_counter() - w0)
        cpu_ms, wall_ms = statistics.median(cpu) * 1000, statistics.median(wall) * 1000
        print(
            f"steady state: {placements} placements on {instances} stand-in instances (fake_triton: 500 "
            f"Python stubs would need ~50 GB) placed and loaded in {placed_s:.1f} s; per pass "
            f"(median of {passes}): {wall_ms:.1f} ms wall, {cpu_ms:.1f} ms CPU (max {max(cpu) * 1000:.1f}); "
            f"at the default {DEFAULT_INTERVAL_S:g} s period "
            f"{cpu_ms / DEFAULT_INTERVAL_S / 10:.2f}% of one core"
        )
    finally:
        for fake in fakes:
            procs.stop(fake)


def main(argv: list[str] | None = None) -> int:
    """Measure and print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=50, help="models on the restarted Triton")
    parser.add_argument("--loads", type=int, default=2, help="loads at a time per instance (the default)")
    parser.add_argument("--placements", type=int, default=500, help="placements in the steady state")
    parser.add_argument("--instances", type=int, default=5, help="instances in the steady state")
    parser.add_argument("--passes", type=int, default=20, help="steady-state passes measured")
    parser.add_argument("--skip-restart", action="store_true", help="only the steady state")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cp-fleet-bench-") as tmp:
        if not args.skip_restart:
            (Path(tmp) / "restart").mkdir()
            restart_recovery(Path(tmp) / "restart", args.models, args.loads)
        (Path(tmp) / "steady").mkdir()
        steady_state(Path(tmp) / "steady", args.placements, args.instances, args.passes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
