"""The fleet end to end: a served control plane over three real Tritons (two from settings, one added
through the API), sharing one folder repository; replicas, spreading, routing over the fleet, an
instance killed under load, drift, draining and an instance back at a new address.

The tests share one stack (module scope) and run in order; each deploys its own tenant's models.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.db import migrate
from control_plane.tritonserver import TritonClient, TritonDistribution, TritonProcess
from tests.fleet.traffic import load, wait_until
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.served import serve, stack_settings
from tests.support.triton_models import write_python_model

INTERVAL_S = 1.0
MOVE_AFTER_S = 2.0


@dataclass
class Stack:
    """The served control plane, its Tritons by instance name, and where it listens."""

    api: Api
    tritons: dict[str, TritonProcess]
    repository: Path
    root: Path

    @property
    def base_url(self) -> str:
        return str(self.api.client.base_url)

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.api.settings.grpc_port}"

    def instances(self) -> dict[str, dict[str, Any]]:
        """GET /v1/instances by name."""
        response = self.api.client.get("/v1/instances", headers=self.api.headers())
        assert response.status_code == 200, response.text
        return {i["name"]: i for i in response.json()}

    def placed_on(self, deployed: Deployed) -> set[str]:
        """Instances (ready) where the version is desired and observed ready."""
        return {
            name
            for name, instance in self.instances().items()
            if instance["state"] == "ready"
            for p in instance["placements"]
            if p["triton_model"] == deployed.triton_name
            and p["desired"] == "ready"
            and p["observed"] == "ready"
        }

    def loaded_on(self, name: str, triton_model: str) -> bool:
        """Whether Triton `name` itself has the model ready."""
        with TritonClient.from_url(self.tritons[name].http_url, timeout_s=5) as client:
            return client.is_model_ready(triton_model)

    def served_count(self, name: str, triton_model: str) -> int:
        """Successful inferences of the model on Triton `name` (its statistics)."""
        url = f"{self.tritons[name].http_url}/v2/models/{triton_model}/stats"
        stats = httpx.get(url, timeout=5).json()["model_stats"]
        return sum(int(s["inference_stats"]["success"]["count"]) for s in stats)

    def deploy(self, *, replicas: int | None = None, seed: int = 0) -> Deployed:
        """A tenant's ONNX model as `production`, with its replicas set before the upload."""
        tenant = self.api.tenant()
        if replicas is not None:
            assert self.api.create_model(tenant, name="mlp", format="onnx").status_code == 201
            self.set_replicas(tenant, replicas)
        return deploy_onnx(self.api, self.root, tenant=tenant, seed=seed)

    def set_replicas(self, tenant: str, replicas: int) -> dict[str, Any]:
        response = self.api.client.put(
            f"/v1/tenants/{tenant}/models/mlp/placement",
            json={"replicas": replicas},
            headers=self.api.headers(),
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def infer_ok(self, deployed: Deployed) -> bool:
        response = self.api.client.post(
            f"/v2/models/{deployed.model}/infer",
            json={"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            headers={"Authorization": f"Bearer {deployed.consumer_key}"},
        )
        return response.status_code == 200


def _start(process: TritonProcess) -> None:
    process.start(timeout_s=60)


def _stop(process: TritonProcess) -> None:
    process.stop(timeout_s=5)


@pytest.fixture(scope="module")
def stack(
    create_database: Any,
    s3_endpoint: str,
    triton_distribution: TritonDistribution,
    triton_backend_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fleet-stack")
    repository = root / "repository"
    repository.mkdir()
    tritons = {
        name: TritonProcess(
            repository=str(repository),
            workdir=root / name,
            backend_dir=triton_backend_dir,
            distribution=triton_distribution,
        )
        for name in ("fa", "fb", "fc")
    }
    try:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(_start, tritons.values()))
        database_url = create_database()
        migrate.upgrade(database_url)
        fa, fb = tritons["fa"], tritons["fb"]
        settings = stack_settings(
            database_url=database_url,
            s3_endpoint=s3_endpoint,
            triton_http_url=fa.http_url,
            triton_grpc_url=fa.grpc_url,
            repository=repository,
            triton_urls=[fa.http_url, fb.http_url],
            triton_grpc_urls=[fa.grpc_url, fb.grpc_url],
            triton_names=["fa", "fb"],
            reconcile_interval_s=INTERVAL_S,
            placement_move_after_s=MOVE_AFTER_S,
            unload_grace_s=0.3,
            triton_health_timeout_s=1.0,
        )
        with serve(settings) as api:
            yield Stack(api=api, tritons=tritons, repository=repository, root=root)
    finally:
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(_stop, tritons.values()))


def test_versions_are_spread_replicas_are_set_by_admins_and_requests_use_every_replica(stack: Stack) -> None:
    first, second = stack.deploy(seed=1), stack.deploy(seed=2)

    assert stack.placed_on(first) == {"fa"} and stack.placed_on(second) == {"fb"}, "fewest placements first"
    [placement] = [p for p in stack.instances()["fa"]["placements"] if p["triton_model"] == first.triton_name]
    assert (placement["tenant"], placement["version"], placement["desired"]) == (first.tenant, 1, "ready")
    assert placement["loaded_at"] is not None

    body = stack.set_replicas(first.tenant, 2)
    assert body["replicas"] == 2 and body["default"] is False
    wait_until(lambda: stack.placed_on(first) == {"fa", "fb"}, timeout=20)
    placement = stack.api.client.get(
        f"/v1/tenants/{first.tenant}/models/mlp/placement", headers=stack.api.headers()
    )
    assert [
        (i["instance"], i["desired"], i["observed"]) for i in placement.json()["versions"][0]["instances"]
    ] == [
        ("fa", "ready", "ready"),
        ("fb", "ready", "ready"),
    ]

    before = {name: stack.served_count(name, first.triton_name) for name in ("fa", "fb")}
    with load(stack.base_url, stack.grpc_address, first) as outcomes:
        wait_until(lambda: outcomes["ok"] >= 200, timeout=30)
    after = {name: stack.served_count(name, first.triton_name) for name in ("fa", "fb")}
    assert set(outcomes) == {"ok"}
    served = {name: after[name] - before[name] for name in after}
    assert min(served.values()) > 0.2 * sum(served.values()), f"both replicas serve: {served}"

    status = stack.api.client.get("/v1/status", headers=stack.api.headers()).json()
    assert {i["name"] for i in status["instances"]} == {"fa", "fb"}
    assert all(i["state"] == "ready" and i["last_reconciled_at"] for i in status["instances"])
    assert status["reconciler"]["leader"] is True


def test_a_killed_instance_costs_no_request_with_two_replicas_and_gets_its_placements_back(
    stack: Stack,
) -> None:
    twice = stack.deploy(replicas=2, seed=3)
    once = stack.deploy(seed=4)  # on the instance with the fewest placements: fa
    # A version is ready once one replica serves it; the other may still be loading.
    wait_until(lambda: stack.placed_on(twice) == {"fa", "fb"}, timeout=20)
    assert stack.placed_on(once) == {"fa"}
    fa = stack.tritons["fa"]
    retries_before = sum(stack.api.state.upstream.retries.values())

    with load(stack.base_url, stack.grpc_address, twice) as outcomes:
        wait_until(lambda: outcomes["ok"] >= 50, timeout=30)
        pid = fa.pid
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        upstream = stack.api.state.upstream
        # The load finds fa gone (a request cut or refused there is retried on fb) before anything is
        # asked of the model only fa had.
        wait_until(lambda: sum(upstream.retries.values()) > retries_before, timeout=10, every=0.01)
        moved_s = wait_until(lambda: stack.infer_ok(once), timeout=MOVE_AFTER_S + 20, every=0.2)
        sent_while_down = outcomes.total()
        assert fa.has_exited()
        fa.start(timeout_s=60)  # back on the same address, empty
        restored_s = wait_until(lambda: stack.loaded_on("fa", twice.triton_name), timeout=20)
        wait_until(lambda: stack.placed_on(twice) == {"fa", "fb"}, timeout=5)
        wait_until(lambda: outcomes.total() > sent_while_down + 50, timeout=30)

    retries = sum(stack.api.state.upstream.retries.values()) - retries_before
    print(
        f"\nfa SIGKILLed under load: outcomes {dict(outcomes)}, {retries} retried on fb; "
        f"the replicas=1 model moved and served after {moved_s:.2f} s; "
        f"fa's placements back {restored_s:.2f} s after it restarted"
    )
    assert set(outcomes) == {"ok"}, f"replicas=2: no request fails ({dict(outcomes)})"
    assert 0 < retries <= outcomes["ok"]  # each request is retried at most once (by construction)
    assert stack.placed_on(once) == {"fb"}, "moved off the dead instance, and it stays there (sticky)"
    assert not stack.loaded_on("fa", once.triton_name)
    assert stack.api.state.router.table.placements[once.triton_name] == ("fb",), "no route to where it was"
    fa_row = stack.instances()["fa"]
    assert fa_row["state"] == "ready" and fa_row["last_error"] is None
    metrics = stack.api.client.get("/metrics", headers=stack.api.headers()).text
    retried = [line for line in metrics.splitlines() if line.startswith("cp_upstream_retries_total{")]
    assert any('triton="fa"' in line for line in retried), retried  # HTTP or gRPC, whichever was cut
    assert (
        "cp_reconcile_pass_seconds_bucket" in metrics
        and 'cp_fleet_instance_ready{triton="fa"} 1.0' in metrics
    )


def test_drift_behind_the_control_plane_is_put_back_within_a_period(stack: Stack) -> None:
    twice = stack.deploy(replicas=2, seed=5)
    once = stack.deploy(seed=6)
    wait_until(lambda: stack.placed_on(twice) == {"fa", "fb"}, timeout=20)
    [where] = stack.placed_on(once)
    other = "fb" if where == "fa" else "fa"
    write_python_model(stack.repository, "someone-elses")
    with TritonClient.from_url(stack.tritons[other].http_url, timeout_s=60) as client:
        client.load_model("someone-elses")
        client.unload_model(twice.triton_name)  # a desired placement lost
        client.load_model(once.triton_name)  # a version of ours where it is not desired

    back_s = wait_until(lambda: stack.loaded_on(other, twice.triton_name), timeout=INTERVAL_S + 10)
    gone_s = wait_until(lambda: not stack.loaded_on(other, once.triton_name), timeout=INTERVAL_S + 10)
    print(
        f"\ndrift on {other}: unloaded placement back after {back_s:.2f} s, "
        f"stray version gone after {gone_s:.2f} s"
    )
    assert stack.loaded_on(other, "someone-elses"), "not ours: never touched"
    assert stack.loaded_on(where, once.triton_name) and stack.infer_ok(once)
    wait_until(lambda: stack.instances()[other]["drift"] == 0, timeout=INTERVAL_S * 3)  # the next pass


def test_draining_an_added_instance_moves_its_placements_with_no_failed_request(stack: Stack) -> None:
    fc = stack.tritons["fc"]
    added = stack.api.client.post(
        "/v1/instances",
        json={"name": "fc", "http_url": fc.http_url, "grpc_url": fc.grpc_url},
        headers=stack.api.headers(),
    )
    assert added.status_code == 201, added.text
    assert (added.json()["origin"], added.json()["draining"]) == ("api", False)
    again = stack.api.client.post(
        "/v1/instances", json={"name": "fc2", "http_url": fc.http_url}, headers=stack.api.headers()
    )
    assert again.status_code == 409
    wait_until(lambda: stack.instances()["fc"]["state"] == "ready", timeout=10)
    deployed = stack.deploy(seed=7)
    assert stack.placed_on(deployed) == {"fc"}, "the new instance has the fewest placements"

    with load(stack.base_url, stack.grpc_address, deployed) as outcomes:
        wait_until(lambda: outcomes["ok"] >= 50, timeout=30)
        drained = stack.api.client.delete("/v1/instances/fc", headers=stack.api.headers())
        assert drained.status_code == 202 and drained.json()["draining"] is True
        gone = stack.api.client.get("/v1/instances/fc", headers=stack.api.headers())
        removed_s = wait_until(
            lambda: stack.api.client.get("/v1/instances/fc", headers=stack.api.headers()).status_code == 404,
            timeout=30,
        )
        count = outcomes.total()
        wait_until(lambda: outcomes.total() > count + 50, timeout=30)

    print(f"\nfc drained and removed after {removed_s:.2f} s under load: outcomes {dict(outcomes)}")
    assert gone.status_code == 200 and gone.json()["draining"] is True
    assert set(outcomes) == {"ok"}, f"no request fails while draining ({dict(outcomes)})"
    assert len(stack.placed_on(deployed)) == 1 and "fc" not in stack.placed_on(deployed)
    assert not stack.loaded_on("fc", deployed.triton_name)
    assert "fc" not in [t.name for t in stack.api.state.tritons]
    for name in ("embedded", "nope"):
        missing = stack.api.client.delete(f"/v1/instances/{name}", headers=stack.api.headers())
        assert missing.status_code == 404


def test_an_instance_back_at_a_new_address_gets_its_placements(stack: Stack) -> None:
    deployed = stack.deploy(replicas=2, seed=8)
    fb = stack.tritons["fb"]
    pid = fb.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    wait_until(fb.has_exited, timeout=10, every=0.01)
    fb.choose_new_ports()
    fb.start(timeout_s=60)  # elsewhere now

    moved = stack.api.client.put(
        "/v1/instances/fb",
        json={"http_url": fb.http_url, "grpc_url": fb.grpc_url},
        headers=stack.api.headers(),
    )
    assert moved.status_code == 200, moved.text
    took = wait_until(lambda: stack.loaded_on("fb", deployed.triton_name), timeout=20)
    print(f"\nfb back at {fb.http_url}: its placements loaded there after {took:.2f} s")
    wait_until(lambda: stack.placed_on(deployed) == {"fa", "fb"}, timeout=10)
    assert [t.http_url for t in stack.api.state.tritons if t.name == "fb"] == [fb.http_url]
    assert stack.infer_ok(deployed)
