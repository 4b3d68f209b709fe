"""The reconcile loop against real Tritons, a real Postgres registry and a real S3 artifact store."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from sqlalchemy import select

from control_plane.db.models import Placement, TritonInstance
from control_plane.fleet.backoff import Backoff
from control_plane.tritonserver import free_port
from tests.fixtures_triton import StartTriton
from tests.fleet.conftest import Fleet, MakeReconciler
from tests.support.triton_models import infer, write_python_model


def _placements(fleet: Fleet, instance: str) -> dict[int, Placement]:
    with fleet.session_factory() as session:
        rows = session.scalars(
            select(Placement).join(TritonInstance).where(TritonInstance.name == instance)
        ).all()
        return {row.version_id: row for row in rows}


def _instance(fleet: Fleet, name: str) -> TritonInstance:
    with fleet.session_factory() as session:
        return session.scalars(select(TritonInstance).where(TritonInstance.name == name)).one()


def test_a_triton_restarted_empty_gets_its_serving_versions_back(
    fleet: Fleet, start_triton: StartTriton, make_reconciler: MakeReconciler
) -> None:
    running = start_triton(repository=fleet.repository.root)
    endpoint = fleet.endpoint(running, name="t1")
    serving = [fleet.version(scale=2.0), fleet.version(scale=3.0)]
    unloaded, failed = fleet.version(state="unloaded"), fleet.version(state="failed")
    reconciler = make_reconciler([endpoint])

    seen = reconciler.reconcile([endpoint], wait_s=60)  # the repository is empty: entries written first

    assert seen["t1"].ready
    for version in serving:
        assert fleet.repository.has_model(version.triton_name)
        assert endpoint.health.is_model_ready(version.triton_name)
    for version in (unloaded, failed):
        assert not endpoint.health.is_model_ready(version.triton_name)
        assert not fleet.repository.has_model(version.triton_name)
    assert list(infer(running.http_url, serving[1].triton_name, [1.0, 2.0])) == [3.0, 6.0]
    placements = _placements(fleet, "t1")
    assert {placements[v.id].state for v in serving} == {"ready"}
    assert all(placements[v.id].loaded_at is not None for v in serving)
    assert unloaded.id not in placements and failed.id not in placements
    row = _instance(fleet, "t1")
    assert row.state == "ready" and row.last_seen_at is not None

    pid = running.process.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # crashed: observed as down, nothing attempted
    seen = reconciler.reconcile([endpoint], wait_s=5)
    assert not seen["t1"].ready and _instance(fleet, "t1").state == "unavailable"

    running.process.start(timeout_s=60)  # back (after its group was reaped), same ports, empty
    assert not endpoint.health.is_model_ready(serving[0].triton_name)
    started = time.monotonic()
    reconciler.reconcile([endpoint], wait_s=60)
    print(f"2 versions back on a restarted Triton in {time.monotonic() - started:.2f} s")
    assert all(endpoint.health.is_model_ready(v.triton_name) for v in serving)
    assert list(infer(running.http_url, serving[0].triton_name, [1.0])) == [2.0]
    assert _instance(fleet, "t1").state == "ready"


def test_a_failing_load_backs_off_and_is_reported(
    fleet: Fleet, start_triton: StartTriton, make_reconciler: MakeReconciler
) -> None:
    running = start_triton(repository=fleet.repository.root)
    endpoint = fleet.endpoint(running, name="t1")
    broken = fleet.version(init="raise RuntimeError('weights are missing: w.bin')")
    fine = fleet.version()
    reconciler = make_reconciler([endpoint])
    now = [0.0]  # the backoff's clock, moved by the test: a slow load beside it takes none of its time
    reconciler.actions.backoff = Backoff(initial_s=1.0, max_s=60.0, clock=lambda: now[0])

    reconciler.reconcile([endpoint], wait_s=60)

    assert endpoint.health.is_model_ready(fine.triton_name), "one failing version blocks nothing"
    failure = reconciler.observed.failures[("t1", broken.id)]
    assert "weights are missing: w.bin" in failure.message and failure.retry_in_s == 1.0
    placement = _placements(fleet, "t1")[broken.id]
    assert placement.state == "failed" and "weights are missing" in (placement.message or "")

    reconciler.reconcile([endpoint], wait_s=60)  # within the backoff: not tried again
    assert reconciler.observed.failures[("t1", broken.id)].retry_in_s == 1.0
    now[0] += 1.1
    reconciler.reconcile([endpoint], wait_s=60)  # due: tried, failed, and the wait doubles
    assert reconciler.observed.failures[("t1", broken.id)].retry_in_s == 2.0

    fleet.set_state(broken, "failed")  # no longer wanted: nothing more is tried or reported
    reconciler.reconcile([endpoint], wait_s=60)
    assert reconciler.observed.failures[("t1", broken.id)].retry_in_s == 2.0


def test_one_dead_and_one_hung_instance_do_not_block_another(
    fleet: Fleet, start_triton: StartTriton, make_reconciler: MakeReconciler
) -> None:
    running = start_triton(repository=fleet.repository.root)
    hung = socket.socket()  # accepts connections (the kernel does) but never answers
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    try:
        dead = fleet.endpoint(f"http://127.0.0.1:{free_port()}", name="dead")
        stuck = fleet.endpoint(f"http://127.0.0.1:{hung.getsockname()[1]}", name="hung")
        alive = fleet.endpoint(running, name="alive")
        version = fleet.version()
        reconciler = make_reconciler([dead, stuck, alive])

        started = time.monotonic()
        seen = reconciler.run_pass(wait_s=60)
        took = time.monotonic() - started

        assert alive.health.is_model_ready(version.triton_name)
        assert (seen["dead"].ready, seen["hung"].ready, seen["alive"].ready) == (False, False, True)
        assert took < 10, f"a pass with a dead and a hung instance took {took:.1f} s"
        assert {_instance(fleet, n).state for n in ("dead", "hung")} == {"unavailable"}
        assert _instance(fleet, "dead").last_seen_at is None
        assert _placements(fleet, "alive")[version.id].state == "ready"
        assert _placements(fleet, "dead") == {}
    finally:
        hung.close()


def test_only_released_versions_of_ours_are_unloaded(
    fleet: Fleet, start_triton: StartTriton, make_reconciler: MakeReconciler, tmp_path: Path
) -> None:
    running = start_triton(repository=fleet.repository.root)
    endpoint = fleet.endpoint(running, name="t1")
    kept, released = fleet.version(), fleet.version()
    reconciler = make_reconciler([endpoint])
    reconciler.reconcile([endpoint], wait_s=60)
    write_python_model(fleet.repository.root, "someone-elses")
    endpoint.client.load_model("someone-elses")
    fleet.set_state(released, "unloaded")

    reconciler.reconcile([endpoint], wait_s=60)

    assert endpoint.health.is_model_ready(kept.triton_name)
    assert endpoint.health.is_model_ready("someone-elses"), "not ours: never touched"
    assert not endpoint.health.is_model_ready(released.triton_name)
    assert _placements(fleet, "t1")[released.id].state == "unloaded"
    assert fleet.repository.has_model(released.triton_name), "the entry stays for a quick reload"


def test_a_version_loads_once_however_many_passes_ask(
    fleet: Fleet, start_triton: StartTriton, make_reconciler: MakeReconciler, tmp_path: Path
) -> None:
    running = start_triton(repository=fleet.repository.root)
    endpoint = fleet.endpoint(running, name="t1")
    starts = tmp_path / "starts.log"
    version = fleet.version(init=f"import time; time.sleep(1.5); open({str(starts)!r}, 'a').write('x')")
    reconciler = make_reconciler([endpoint])

    for _ in range(3):
        reconciler.reconcile([endpoint])  # each pass sees the load in flight (or LOADING)
    assert reconciler.wait_idle(60)
    reconciler.reconcile([endpoint], wait_s=60)

    assert endpoint.health.is_model_ready(version.triton_name)
    assert starts.read_text() == "x", "initialize ran once"


def test_one_leader_reconciles_the_shared_fleet_others_only_their_own(
    fleet: Fleet, start_triton: StartTriton, make_reconciler: MakeReconciler
) -> None:
    shared = start_triton(repository=fleet.repository.root)
    own = start_triton(repository=fleet.repository.root)
    version = fleet.version()
    first = make_reconciler([fleet.endpoint(shared, name="shared")])
    second_shared, second_own = fleet.endpoint(shared, name="shared"), fleet.endpoint(own, name="own")
    second = make_reconciler([second_shared, second_own], local={"own"})

    first.run_pass(wait_s=60)
    seen = second.run_pass(wait_s=60)

    assert first.observed.leader and not second.observed.leader
    assert set(seen) == {"shared", "own"}, "every process observes its whole view (for routing)"
    assert set(second.observed.drift) == {"own"}, "not the leader: it acts on its own instance only"
    assert second_own.health.is_model_ready(version.triton_name)

    first.stop()  # leadership passes on with the lock's connection (once the server has closed it)
    deadline = time.monotonic() + 10
    while not second.observed.leader and time.monotonic() < deadline:
        second.run_pass(wait_s=60)
        time.sleep(0.05)
    assert second.observed.leader and set(second.observed.drift) == {"shared", "own"}


def test_an_upload_is_placed_before_any_pass_has_seen_the_instance(
    fleet: Fleet, start_triton: StartTriton, make_reconciler: MakeReconciler
) -> None:
    running = start_triton(repository=fleet.repository.root)
    endpoint = fleet.endpoint(running, name="t1")
    version = fleet.version(state="registered")
    reconciler = make_reconciler([endpoint])  # no pass yet: nothing observed

    assert reconciler.actions.loader.load(version.id) == "ready"

    assert endpoint.health.is_model_ready(version.triton_name)
    placement = _placements(fleet, "t1")[version.id]
    assert (placement.desired, placement.state) == ("ready", "ready")
