"""Residency against the real bundled Triton: a budget that holds 3 of 5 models, on-demand loads,
LRU eviction with in-flight and pinned protection, one load for 20 concurrent first requests, and two
control-plane processes on one Postgres loading a cold model once.

One Triton, one database and one served control plane for the module (tests run in file order and
build on each other's models); the budget is set through the instances API from the first model's
measured size.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from sqlalchemy import select
from tritonclient.grpc import service_pb2 as pb

from bench.residency import metric_by
from control_plane.db import migrate
from control_plane.db.models import Model, ModelVersion
from control_plane.residency import sizes
from control_plane.residency.policy import REASONS
from control_plane.tritonserver import TritonDistribution
from tests.fixtures_triton import RunningTriton, private_triton
from tests.support.api import Api
from tests.support.served import serve, stack_settings
from tests.support.triton_models import MODEL
from tests.support.v2 import server_timing, trailing_timing

MODELS = [f"m{i}" for i in range(5)]
SPEC: dict[str, Any] = {
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
    "max_batch_size": 0,
}
SLOW = MODEL.replace("responses = []", "import time\n        time.sleep(3.0)\n        responses = []").format(
    init="pass", scale=2.0, offset=0.0
)


@dataclass
class Stack:
    api: Api
    triton: RunningTriton
    pid: int
    tenant: str
    consumer: str
    settings_for: Callable[..., Any]

    def infer(
        self, model: str, *, client: httpx.Client | None = None, key: str | None = None
    ) -> httpx.Response:
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]}
        return (client or self.api.client).post(
            f"/v2/models/{model}/versions/1/infer",
            json=body,
            headers={"Authorization": f"Bearer {key or self.consumer}"},
            timeout=60,
        )

    def infer_grpc(self, model: str) -> list[float]:
        """OUTPUT0 of [1, 2] through the control plane's gRPC port (stock tritonclient)."""
        return _infer_grpc(self.api, model, self.consumer)

    def wait_in_flight(self, *models: str, timeout: float = 10.0) -> None:
        """Until a request to each of these resident models is on its way to Triton (counted by the data
        plane, which keeps an eviction off it): a request submitted to a pool may not have started yet."""
        deadline = time.monotonic() + timeout
        while True:
            counted = {_short(name) for name, n in self.api.state.inflight.items() if n > 0}
            if set(models) <= counted:
                return
            assert time.monotonic() < deadline, f"no request in flight for {set(models) - counted}"
            time.sleep(0.01)

    def loaded(self) -> set[str]:
        """Our models Triton has loaded, by short name."""
        index = self.triton.client.repository_index()
        return {_short(m["name"]) for m in index if m.get("state") == "READY"}

    def stub_bytes(self) -> int:
        """What the models' processes hold (their stubs and what those started)."""
        return sum(sizes.rss(pid) for pid in sizes.processes(self.pid))

    def loads(self) -> int:
        reconciler = self.api.state.reconciler
        assert reconciler is not None
        return sum(n for (_, outcome), n in reconciler.observed.stats.loads.items() if outcome == "ok")


def _short(triton_name: str) -> str:
    return triton_name.split("--")[1]


@pytest.fixture(scope="module")
def stack(
    create_database: Callable[[], str],
    s3_endpoint: str,
    triton_distribution: TritonDistribution,
    triton_backend_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    url = create_database()
    migrate.upgrade(url)
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    with ExitStack() as stack:
        triton = stack.enter_context(
            private_triton(
                tmp_path_factory,
                "residency",
                distribution=triton_distribution,
                backend_dir=triton_backend_dir,
            )
        )
        repository = triton.repository
        assert repository is not None

        def settings_for(**overrides: Any) -> Any:
            return stack_settings(
                database_url=url,
                s3_endpoint=s3_endpoint,
                triton_http_url=triton.http_url,
                triton_grpc_url=triton.process.grpc_url,
                repository=repository,
                s3_bucket=bucket,
                reconcile_interval_s=1.0,
                eviction_grace_s=0.05,
                tenant_memory_share=1.0,
                **overrides,
            )

        api = stack.enter_context(serve(settings_for()))
        tenant = api.tenant()
        for name in MODELS:
            assert api.create_model(tenant, name=name, format="python", **SPEC).status_code == 201
            source = tmp_path_factory.mktemp(name) / "model.py"
            source.write_text(SLOW if name == "m2" else MODEL.format(init="pass", scale=2.0, offset=0.0))
            uploaded = api.upload(tenant, name, source)
            assert uploaded.status_code == 201 and uploaded.json()["state"] == "registered"
        pid = sizes.local_pid(triton.http_url)
        assert pid is not None
        yield Stack(api, triton, pid, tenant, api.key(tenant, "consumer"), settings_for)


def _set_budget(stack: Stack, budget: int) -> None:
    instances = stack.api.client.get("/v1/instances", headers=stack.api.headers()).json()
    name = instances[0]["name"]
    response = stack.api.client.put(
        f"/v1/instances/{name}", json={"memory_budget_bytes": budget}, headers=stack.api.headers()
    )
    assert response.status_code == 200, response.text
    assert response.json()["memory_budget_bytes"] == budget


class _Sampler:
    """The stubs' real memory, sampled every 20 ms while a block runs."""

    def __init__(self, stack: Stack) -> None:
        self.stack, self.peak, self._stop = stack, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.stack.stub_bytes())

    def __enter__(self) -> _Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def test_five_models_in_a_budget_of_three_lru_inflight_and_pinned(stack: Stack) -> None:
    api, tenant = stack.api, stack.tenant
    cold = stack.infer("m0")  # cold: loaded on demand, no budget yet
    assert cold.status_code == 200
    detail = api.version(tenant, "m0", 1)
    assert detail["resident_on"] and detail["memory_source"] == "stub" and detail["load_seconds"] > 0
    # Its Server-Timing says where the time went: the wait for the load (at least Triton's load time) apart.
    timing = server_timing(cold.headers["server-timing"])
    assert set(timing) == {"gateway", "load", "triton"}, cold.headers["server-timing"]
    assert timing["load"] >= detail["load_seconds"] * 1000 and timing["triton"] > 0 and timing["gateway"] >= 0
    warm = stack.infer("m0")  # resident now: no wait to show
    assert set(server_timing(warm.headers["server-timing"])) == {"gateway", "triton"}
    size = detail["memory_bytes"]
    budget = int(size * 3.5)
    _set_budget(stack, budget)
    with _Sampler(stack) as sampler:
        for name in ("m1", "m3"):
            assert stack.infer(name).status_code == 200
        assert stack.loaded() == {"m0", "m1", "m3"}
        assert stack.infer("m1").status_code == 200 and stack.infer("m3").status_code == 200  # m0 is LRU
        assert stack.infer("m4").status_code == 200
        assert stack.loaded() == {"m1", "m3", "m4"}, "the least recently used idle model is evicted"
        # m1 pinned (its production alias), m2 slow with a request in flight: never evicted.
        promoted = api.client.put(
            f"/v1/tenants/{tenant}/models/m1/aliases/production", json={"version": 1}, headers=api.headers()
        )
        assert promoted.status_code == 200, promoted.text
        pinned = api.client.put(
            f"/v1/tenants/{tenant}/models/m1/placement",
            json={"pinned_aliases": ["production"]},
            headers=api.headers(),
        )
        assert pinned.status_code == 200 and pinned.json()["pinned_aliases"] == ["production"]
        assert stack.infer("m2").status_code == 200  # loads m2 (evicting m3, the LRU)
        with ThreadPoolExecutor(1) as pool:
            slow = pool.submit(stack.infer, "m2")  # in flight for 3 s, and now the LRU of the unpinned
            stack.wait_in_flight("m2")
            assert stack.infer("m4").status_code == 200  # resident: a hit
            assert stack.infer("m0").status_code == 200  # must evict m4: m1 pinned, m2 in flight
            assert "m2" in stack.loaded() and "m1" in stack.loaded()
            assert stack.infer("m3").status_code == 200  # evicts m0 this time
            assert "m2" in stack.loaded()
            assert slow.result().status_code == 200
        assert stack.loaded() >= {"m1", "m2"}
        assert len(stack.loaded()) == 3
    assert sampler.peak <= budget, f"stubs held {sampler.peak} bytes, budget {budget}"
    metrics = api.client.get("/metrics", headers=api.headers()).text
    assert "cp_residency_evictions_total" in metrics and "cp_residency_cold_start_seconds_bucket" in metrics
    instance = api.client.get("/v1/instances", headers=api.headers()).json()[0]
    assert instance["memory_budget_bytes"] == budget and 0 < instance["resident_bytes"] <= budget
    assert instance["pinned_over_budget_bytes"] == 0 and instance["over_budget_bytes"] == 0


def test_evictions_end_the_stubs_and_leave_no_process_or_shared_memory_behind(stack: Stack) -> None:
    """An eviction ends the version's stubs just before Triton unloads it (their memory returns at
    once, not after Triton's one-second health check): Triton still finalizes each instance cleanly,
    reaps its stub and removes its shared memory, and the evicted versions load again."""
    evicted_before = _evictions(stack)
    for _ in range(2):
        for name in ("m0", "m3", "m4", "m0", "m4", "m3"):
            assert stack.infer(name).status_code == 200
    evicted = _evictions(stack) - evicted_before
    assert evicted["lru"] >= 3, f"one tenant, no headroom: room is made least recently used first ({evicted})"
    assert set(evicted) <= set(REASONS)
    deadline = time.monotonic() + 10
    while True:  # Triton reaps an ended stub after its health check (a second)
        children = _children(stack.pid)
        regions = list(Path("/dev/shm").glob(f"{stack.triton.process.shm_prefix}*"))
        stubs = sizes.stubs(stack.pid)
        # The last eviction may still be UNLOADING: its stub ended, Triton finalizes it within a second.
        states = {m["name"]: m.get("state") for m in stack.triton.client.repository_index()}
        settled = all(state in ("READY", "UNAVAILABLE") for state in states.values())
        if settled and "Z" not in children.values() and len(regions) == len(stubs) == len(stack.loaded()):
            break
        assert time.monotonic() < deadline, (
            f"left behind: {children}, {len(regions)} regions, {stubs}, {states}"
        )
        time.sleep(0.1)


def _children(pid: int) -> dict[int, str]:
    """PID -> state letter of the processes whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found[int(entry.name)] = fields[0]
    return found


def _evictions(stack: Stack) -> Counter[str]:
    """`cp_residency_evictions_total` by its reason label."""
    metrics = stack.api.client.get("/metrics", headers=stack.api.headers()).text
    return metric_by(metrics, "cp_residency_evictions_total", "reason")


def test_twenty_concurrent_first_requests_cause_exactly_one_load(stack: Stack) -> None:
    cold = sorted(set(MODELS) - stack.loaded() - {"m2"})[0]
    before = stack.loads()
    with ThreadPoolExecutor(20) as pool, httpx.Client(base_url=str(stack.api.client.base_url)) as client:
        answers = list(pool.map(lambda _: stack.infer(cold, client=client).status_code, range(20)))
    assert answers == [200] * 20
    assert stack.loads() - before == 1
    assert _one_stub(stack, cold)


def test_two_control_planes_on_one_postgres_load_a_cold_model_once(stack: Stack) -> None:
    cold = sorted(set(MODELS) - stack.loaded() - {"m2"})[0]
    with serve(stack.settings_for()) as second:
        before = stack.loads() + _loads(second)
        with ThreadPoolExecutor(10) as pool:
            clients = [stack.api.client, second.client]
            answers = list(
                pool.map(lambda i: stack.infer(cold, client=clients[i % 2]).status_code, range(10))
            )
        assert answers == [200] * 10
        assert stack.loads() + _loads(second) - before == 1
        assert _one_stub(stack, cold)


def _one_stub(stack: Stack, model: str) -> bool:
    """Whether one stub process runs `model` (a stub ended by an earlier eviction may linger as a zombie
    until Triton's unload reaps it: it runs nothing and holds no memory)."""
    found = {pid: _state(pid) for pid, name in sizes.stubs(stack.pid).items() if _short(name) == model}
    running = [pid for pid, state in found.items() if state not in ("Z", "X", "?")]
    assert len(running) == 1, f"stubs of {model} (pid: state): {found}"
    return True


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


def _loads(api: Api) -> int:
    reconciler = api.state.reconciler
    assert reconciler is not None
    return sum(n for (_, outcome), n in reconciler.observed.stats.loads.items() if outcome == "ok")


def test_a_cold_model_loads_on_demand_over_grpc(stack: Stack) -> None:
    cold = sorted(set(MODELS) - stack.loaded(), key=lambda m: m == "m2")[0]
    assert stack.infer_grpc(cold) == [2.0, 4.0]  # stock tritonclient
    assert cold in stack.loaded()
    other = sorted(set(MODELS) - stack.loaded(), key=lambda m: m == "m2")[0]  # cold too
    # A plain grpc channel reads the answer's trailing metadata: the wait for the load told apart.
    request = pb.ModelInferRequest(model_name=other, model_version="1")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[2])
    request.raw_input_contents.append(np.array([1.0, 2.0], dtype=np.float32).tobytes())
    metadata = (("authorization", f"Bearer {stack.consumer}"),)
    with grpc.insecure_channel(f"127.0.0.1:{stack.api.settings.grpc_port}") as channel:
        infer = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        answer, call = infer.with_call(request.SerializeToString(), metadata=metadata, timeout=60)
        assert np.frombuffer(answer.raw_output_contents[0], dtype=np.float32).tolist() == [2.0, 4.0]
        timing = trailing_timing(call)
        assert set(timing) == {"gateway", "load", "triton"}, call.trailing_metadata()
        load_seconds = stack.api.version(stack.tenant, other, 1)["load_seconds"]
        assert timing["load"] >= load_seconds * 1000 and timing["triton"] > 0
        _, warm = infer.with_call(request.SerializeToString(), metadata=metadata, timeout=60)
        assert set(trailing_timing(warm)) == {"gateway", "triton"}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_version_gone_from_triton_behind_the_routes_is_waited_for_not_failed(
    stack: Stack, protocol: str
) -> None:
    """Triton unloads a version the routing table still calls resident (an eviction racing a request,
    or an operator): the request waits for it to be loaded again instead of failing."""
    model = sorted(stack.loaded() - {"m2"})[0]
    names = [m["name"] for m in stack.triton.client.repository_index() if m.get("state") == "READY"]
    stack.triton.client.unload_model(next(n for n in names if _short(n) == model))
    assert model not in stack.loaded()
    if protocol == "http":
        response = stack.infer(model)
        assert response.status_code == 200, response.text
    else:
        assert stack.infer_grpc(model) == [2.0, 4.0]
    assert model in stack.loaded()


def _register(stack: Stack, name: str, init: str, tmp: Path, *, tenant: str | None = None) -> None:
    """A Python model of `tenant` (the module's by default) whose `initialize()` runs `init`."""
    api, tenant = stack.api, tenant or stack.tenant
    assert api.create_model(tenant, name=name, format="python", **SPEC).status_code == 201
    source = tmp / f"{tenant}-{name}.py"
    source.write_text(MODEL.format(init=init, scale=2.0, offset=0.0))
    assert api.upload(tenant, name, source).status_code == 201


def _hold(stack: Stack, in_order: tuple[str, ...]) -> int:
    """A budget of half a model's memory more than m1 (pinned since the first test) and the models
    `in_order`, asked for in that order (so the first is the least recently used) and waited for until
    they are exactly what Triton holds; one model's memory."""
    held = {"m1", *in_order}
    size = max(stack.api.version(stack.tenant, m, 1)["memory_bytes"] or 0 for m in sorted(held))
    _set_budget(stack, int(size * (len(held) + 0.5)))
    for name in in_order:
        assert stack.infer(name).status_code == 200
    deadline = time.monotonic() + 15
    while stack.loaded() != held:
        assert time.monotonic() < deadline, stack.loaded()
        time.sleep(0.2)
    return size


def test_requests_to_a_version_that_failed_to_load_are_told_why(stack: Stack, tmp_path: Path) -> None:
    """Triton's reason reaches the caller (it said only "could not be loaded (failed)"), with a
    Retry-After that does not invite a retry every two seconds: a failed version is not loaded again
    until asked for explicitly or replaced."""
    _register(stack, "broken", "raise RuntimeError('weights file w.bin is missing')", tmp_path)
    for _ in range(2):  # the first waits for the load, the second finds the version failed
        response = stack.infer("broken")
        assert response.status_code == 503, response.text
        assert "w.bin is missing" in response.text and response.headers["retry-after"] == "30"
        assert "--" not in response.text and "/tmp" not in response.text, "no internal name or path"
        error = response.json()["error"]
        assert (
            error
            == "version 1 of model 'broken' is not ready: its load failed: Internal: RuntimeError: weights "
            "file w.bin is missing"
        ), "named once, as the caller knows it (the loader's and Triton's prefixes named it twice more)"


def test_requests_waiting_for_a_version_deleted_meanwhile_get_404(stack: Stack, tmp_path: Path) -> None:
    _register(stack, "doomed", "import time; time.sleep(3)", tmp_path)
    with ThreadPoolExecutor(2) as pool:
        waiting = [pool.submit(stack.infer, "doomed") for _ in range(2)]
        time.sleep(1.0)
        deleted = stack.api.client.delete(
            f"/v1/tenants/{stack.tenant}/models/doomed/versions/1", headers=stack.api.headers()
        )
        assert deleted.status_code == 200, deleted.text
        for future in waiting:
            response = future.result()
            assert response.status_code == 404 and "no longer exists" in response.text, response.text


def test_versions_whose_loads_keep_failing_do_not_hold_up_other_loads(stack: Stack, tmp_path: Path) -> None:
    """Versions that loaded before and now fail to load (their GPU full, a dependency down) are retried
    ever more slowly; asked for first, they came first for the load workers on every pass while the
    loop skipped them for their backoff, and a version asked for after them never loaded (a promote
    hung for 300 s in the full suite)."""
    instance = stack.api.client.get("/v1/instances", headers=stack.api.headers()).json()[0]
    _set_budget(stack, 2**40)  # none of them evicted meanwhile
    broken = tmp_path / "broken"
    flaky = [f"flaky{i}" for i in range(stack.api.settings.reconcile_loads_per_instance)]
    fail_if_broken = f"if __import__('os').path.exists({str(broken)!r}): raise RuntimeError('GPU full')"
    for name in flaky:
        _register(stack, name, f"{fail_if_broken}  # {name}", tmp_path)
        assert stack.infer(name).status_code == 200
    broken.touch()
    _register(stack, "fresh", "pass  # fresh", tmp_path)
    try:
        index = [m["name"] for m in stack.triton.client.repository_index() if m.get("state") == "READY"]
        for name in index:
            if _short(name) in flaky:  # behind the routes: the loop loads them again, and fails
                stack.triton.client.unload_model(name)
        reconciler = stack.api.state.reconciler
        assert reconciler is not None

        with stack.api.state.session_factory() as session:
            ids = session.execute(
                select(Model.name, ModelVersion.id)
                .join(ModelVersion, ModelVersion.model_id == Model.id)
                .where(Model.name.in_(flaky), Model.deleted_at.is_(None))
            ).all()
        keys = [(instance["name"], version_id) for _, version_id in sorted(ids)]

        def failures() -> list[int]:
            return [reconciler.actions.backoff.failures(key) for key in keys]

        deadline = time.monotonic() + 30
        while min(failures()) < 4:  # each failed four times: their next tries are 8 s away
            assert time.monotonic() < deadline, (failures(), stack.loaded())
            time.sleep(0.05)
        time.sleep(2.0)  # asked for (their last failure) longer ago than the fresh version will be
        started = time.monotonic()
        response = stack.infer("fresh")
        assert response.status_code == 200, response.text
        waited = time.monotonic() - started
        assert waited < 2.5, f"{waited:.1f} s: held up by the versions backing off"
    finally:
        for name in [*flaky, "fresh"]:
            stack.api.client.delete(f"/v1/tenants/{stack.tenant}/models/{name}", headers=stack.api.headers())
        _set_budget(stack, instance["memory_budget_bytes"])


def test_a_promote_or_load_with_no_room_beside_the_pinned_is_refused_clearly(stack: Stack) -> None:
    """A budget that holds only the pinned version: promoting (or loading) another waits for room that no
    eviction can make, so it is refused with the reason within seconds (409), not after the load timeout
    (it was a 500 after 300 s), and its requests get 503 saying why; the pinned version stays and the
    budget is never exceeded."""
    api, tenant = stack.api, stack.tenant
    assert stack.infer("m1").status_code == 200  # pinned (production) in the first test
    pinned = api.version(tenant, "m1", 1)["memory_bytes"]
    other = max(api.version(tenant, m, 1)["memory_bytes"] or 0 for m in ("m0", "m3"))
    assert other > 0
    # m1 was unloaded behind the routes and loaded again at once in the test before: measured as its own
    # stub, not with the previous one still exiting (it was counted three times over).
    assert pinned < 1.5 * other, (pinned, other)
    _set_budget(stack, pinned + other // 2)  # m1 and half of another
    deadline = time.monotonic() + 30
    # The others are evicted to fit the smaller budget, and the stubs of m1's earlier loads (the test
    # before unloaded it behind the routes, twice) have exited.
    while stack.loaded() != {"m1"} or len([p for p in sizes.stubs(stack.pid) if sizes.rss(p)]) > 1:
        assert time.monotonic() < deadline, stack.loaded()
        time.sleep(0.2)
    with _Sampler(stack) as sampler:
        started = time.monotonic()
        promoted = api.client.put(
            f"/v1/tenants/{tenant}/models/m0/aliases/production",
            json={"version": 1},
            headers=api.headers(),
            timeout=120,
        )
        took = time.monotonic() - started
        assert promoted.status_code == 409, promoted.text
        assert "memory budget" in promoted.json()["detail"] and "pinned" in promoted.json()["detail"]
        assert took < 30, f"refused after {took:.1f} s"
        loaded = api.client.post(
            f"/v1/tenants/{tenant}/models/m3/versions/1/load", headers=api.headers(), timeout=120
        )
        assert loaded.status_code == 409 and "memory budget" in loaded.json()["detail"], loaded.text
        started = time.monotonic()
        cold = stack.infer("m0")  # the data plane says so too, without waiting out the cold-start wait
        assert cold.status_code == 503 and "memory budget" in cold.text, cold.text
        assert cold.headers["retry-after"] == "10" and time.monotonic() - started < 15
        instance = api.client.get("/v1/instances", headers=api.headers()).json()[0]
        assert {_short(n) for n in instance["waiting_for_room"]} <= {"m0", "m3"}
    assert stack.loaded() == {"m1"}
    assert sampler.peak <= pinned + other // 2
    model = api.client.get(f"/v1/tenants/{tenant}/models/m0", headers=api.headers())
    assert model.status_code == 200 and "production" not in model.json()["aliases"], "nothing moved"


def test_a_version_waiting_for_room_loads_as_soon_as_a_busy_one_goes_idle(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every version a cold request could evict is busy (m1 pinned, m2 and s1 answering for 3 s): the
    request waits, and is served when one of them has no request in flight any more. Nothing else
    (here: no period, no renewed request for the load) runs the loop then; it waited for the period,
    or up to a second for `renew`, and a version nobody waits for still does."""
    api = stack.api
    source = tmp_path / "s1.py"
    source.write_text(SLOW)
    assert api.create_model(stack.tenant, name="s1", format="python", **SPEC).status_code == 201
    assert api.upload(stack.tenant, "s1", source).status_code == 201
    size = max(api.version(stack.tenant, m, 1)["memory_bytes"] or 0 for m in ("m0", "m1", "m2"))
    _set_budget(stack, int(size * 3.5))  # m1 (pinned), m2 and s1
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda m: stack.infer(m).status_code, ["m2", "s1"])) == [200, 200]
    assert stack.loaded() == {"m1", "m2", "s1"}
    reconciler = api.state.reconciler
    assert reconciler is not None
    monkeypatch.setattr(api.state.residency, "renew", lambda: None)
    period, reconciler.interval_s = reconciler.interval_s, 3600.0
    try:
        time.sleep(1.2)  # the loop's wait at the old period is over
        with ThreadPoolExecutor(2) as pool:
            busy = [pool.submit(stack.infer, m) for m in ("m2", "s1")]
            stack.wait_in_flight("m2", "s1")
            started = time.monotonic()
            cold = stack.infer("m0")
            took = time.monotonic() - started
            assert [f.result().status_code for f in busy] == [200, 200]
        assert cold.status_code == 200, cold.text
        assert took < 10, f"served after {took:.1f} s"
        assert "m0" in stack.loaded() and "m1" in stack.loaded()
    finally:
        reconciler.interval_s = period
        reconciler.trigger()


def test_an_instance_over_a_lowered_budget_evicts_a_busy_version_as_soon_as_it_is_idle(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget is lowered below what the resident versions hold while s1 answers a 3 s request: the
    idle, unpinned versions go at once, s1 (the instance over its budget until then) as soon as its
    request is answered, not at the loop's next period (here none: it kept the memory for good)."""
    api = stack.api
    size = max(api.version(stack.tenant, m, 1)["memory_bytes"] or 0 for m in ("m0", "m1", "s1"))
    _set_budget(stack, size * 6)
    assert [stack.infer(m).status_code for m in ("m0", "s1")] == [200, 200]
    assert {"m0", "m1", "s1"} <= stack.loaded()
    reconciler = api.state.reconciler
    assert reconciler is not None
    monkeypatch.setattr(api.state.residency, "renew", lambda: None)
    period, reconciler.interval_s = reconciler.interval_s, 3600.0
    try:
        time.sleep(1.2)  # the loop's wait at the old period is over
        before = _evictions(stack)
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(stack.infer, "s1")
            stack.wait_in_flight("s1")
            _set_budget(stack, int(size * 1.5))  # m1 (pinned) and half of another
            deadline = time.monotonic() + 10
            while stack.loaded() != {"m1", "s1"}:
                assert time.monotonic() < deadline, f"the idle ones stay: {stack.loaded()}"
                time.sleep(0.1)
            assert not busy.done(), "s1 was still answering when the others had gone"
            assert busy.result().status_code == 200, "never evicted with its request in flight"
        answered = time.monotonic()
        while "s1" in stack.loaded():
            assert time.monotonic() - answered < 5, "s1 kept the instance over its budget once idle"
            time.sleep(0.1)
        assert stack.loaded() == {"m1"}
        deadline = time.monotonic() + 5  # counted once the unload has returned: Triton's index shows it first
        while _evictions(stack)["over_budget"] - before["over_budget"] < 2:
            assert time.monotonic() < deadline, (_evictions(stack), before)
            time.sleep(0.05)
    finally:
        _set_budget(stack, size * 6)  # the tests after this one load a version before they set theirs
        reconciler.interval_s = period
        reconciler.trigger()


def _resident_bytes(stack: Stack) -> int:
    instance = stack.api.client.get("/v1/instances", headers=stack.api.headers()).json()[0]
    return int(instance["resident_bytes"])


def test_a_deleted_versions_room_is_counted_once_its_stubs_are_gone(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version deleted (or retired, or moved away) is unloaded by the loop, not evicted: once its
    stubs exit, a pass counts the room it left, for the resident bytes shown and for versions waiting
    for that room. They waited for the next change or the period (the pass that planned the unload
    still counted it)."""
    _register(stack, "leaving", "pass", tmp_path)
    assert stack.infer("leaving").status_code == 200
    size = stack.api.version(stack.tenant, "leaving", 1)["memory_bytes"]
    assert size, "measured at its load"
    _set_budget(stack, size * 20)  # room for every model of the module: nothing evicted meanwhile
    reconciler = stack.api.state.reconciler
    assert reconciler is not None
    monkeypatch.setattr(stack.api.state.residency, "renew", lambda: None)
    period, reconciler.interval_s = reconciler.interval_s, 3600.0
    try:
        time.sleep(1.2)  # the loop's wait at the old period is over
        reconciler.trigger()
        assert reconciler.wait_idle(10)
        time.sleep(0.5)
        before = _resident_bytes(stack)
        assert before >= size and "leaving" in stack.loaded()
        deleted = stack.api.client.delete(
            f"/v1/tenants/{stack.tenant}/models/leaving/versions/1", headers=stack.api.headers()
        )
        assert deleted.status_code == 200, deleted.text
        deadline = time.monotonic() + 8
        while _resident_bytes(stack) > before - size // 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "leaving" not in stack.loaded()
        assert _resident_bytes(stack) <= before - size // 2, (before, size, _resident_bytes(stack))
    finally:
        reconciler.interval_s = period
        reconciler.trigger()


GROWS = MODEL.replace(
    "    def execute(self, requests):\n",
    "    def execute(self, requests):\n"
    "        if not hasattr(self, 'buffer'):  # what a model may allocate at its first inference\n"
    "            self.buffer = np.ones(60 * 2**20 // 8)\n",
)


def test_memory_a_version_takes_after_its_load_is_recorded_for_its_next_load(
    stack: Stack, tmp_path: Path
) -> None:
    """Measured at its load, before it allocated 60 MiB at its first inference: every reload was
    counted at the small size and took the instance over its budget until the next pass."""
    api = stack.api
    source = tmp_path / "grows.py"
    source.write_text(GROWS.format(init="pass", scale=2.0, offset=0.0))
    assert api.create_model(stack.tenant, name="grows", format="python", **SPEC).status_code == 201
    assert api.upload(stack.tenant, "grows", source).status_code == 201
    assert stack.infer("grows").status_code == 200
    at_load = api.version(stack.tenant, "grows", 1)["memory_bytes"]
    assert at_load, "measured at its load"
    _set_budget(stack, at_load * 20)  # the budget step is what reads the stubs
    reconciler = api.state.reconciler
    assert reconciler is not None
    deadline = time.monotonic() + 10
    while (now := api.version(stack.tenant, "grows", 1)["memory_bytes"]) < at_load + 40 * 2**20:
        assert time.monotonic() < deadline, f"still {now} bytes recorded against {at_load} at its load"
        reconciler.trigger()  # a pass reads what its stubs hold now
        time.sleep(0.3)


def test_a_load_asked_for_that_does_not_finish_in_time_is_409_not_200(stack: Stack, tmp_path: Path) -> None:
    """`POST .../load` waits up to the load timeout; past it, it answered 200 with the version resident
    nowhere (found by an adversarial run, after 300 s)."""
    _register(stack, "slowload", "import time; time.sleep(4)", tmp_path)
    with serve(stack.settings_for(triton_load_timeout_s=1.0, cold_start_wait_s=1.0)) as second:
        started = time.monotonic()
        response = second.client.post(
            f"/v1/tenants/{stack.tenant}/models/slowload/versions/1/load", headers=second.headers()
        )
        took = time.monotonic() - started
    assert response.status_code == 409, response.text
    assert "did not finish within 1 s" in response.json()["detail"] and took < 3.5
    assert stack.infer("slowload").status_code == 200, "the load went on"


def test_a_load_that_never_finishes_fails_at_its_timeout_and_takes_no_other_models_room(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose `initialize()` never returns (found by an adversarial run): at the load timeout its
    version fails, its callers told so in their terms (no Triton address), and its stub is ended so
    Triton's load fails too and gives its memory back. While Triton still loads it (here: the stub left
    running, as on a Triton on another machine) it counts as held, and a cold model needing room evicts
    the least recently used idle one: it counted as on its way out, so that room was never made and every
    cold load needing an eviction waited for good."""
    api = stack.api
    reconciler = api.state.reconciler
    assert reconciler is not None
    _register(stack, "hangs", "import time; time.sleep(100000)", tmp_path)
    _hold(stack, ("m0", "m3"))
    endpoint = reconciler.tritons[0]
    monkeypatch.setattr(endpoint.client, "_timeout_s", 2.0)  # CP_TRITON_LOAD_TIMEOUT_S
    residency = api.state.residency
    given_up: list[str] = []
    monkeypatch.setattr(residency, "load_timed_out", lambda endpoint, name: given_up.append(name))
    try:
        started = time.monotonic()
        answer = stack.infer("hangs")
        assert answer.status_code == 503 and time.monotonic() - started < 10, answer.text
        detail = answer.json()["error"]
        assert "its load failed: the load did not finish within 2 s" in detail and "://" not in detail
        assert [_short(n) for n in given_up] == ["hangs"]
        assert _triton_states(stack).get("hangs") == "LOADING", "Triton still loads it, holding its memory"
        assert stack.infer("m4").status_code == 200, "the room came from the least recently used idle model"
        assert stack.loaded() == {"m1", "m4"}, "m0 and m3 gave way: 'hangs' holds a model's memory"
    finally:
        monkeypatch.undo()
        for name in {n for n in sizes.stubs(stack.pid).values() if _short(n) == "hangs"}:
            residency.load_timed_out(endpoint, name)  # what the timeout does on a Triton here
    deadline = time.monotonic() + 10
    while _triton_states(stack).get("hangs") == "LOADING" or any(
        _short(n) == "hangs" for n in sizes.stubs(stack.pid).values()
    ):
        assert time.monotonic() < deadline, "Triton went on loading it"
        time.sleep(0.2)


def test_two_tenants_loads_that_hang_do_not_hold_a_third_tenants_cold_start(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two load workers; tenants B and C each ask for a model whose `initialize()` never returns, one
    worker each (no tenant takes the last one, but two tenants took both). A's cold model waited for the
    load timeout (300 s by default; 8 s here); once those loads are stalled (`CP_TRITON_LOAD_STALL_S`,
    1 s here) they hold no worker and A's loads beside them (found by an adversarial run)."""
    api = stack.api
    reconciler = api.state.reconciler
    assert reconciler is not None
    endpoint = reconciler.tritons[0]
    monkeypatch.setattr(reconciler.actions, "_loads_per_instance", 2)
    monkeypatch.setattr(reconciler.actions, "stall_s", 1.0)
    monkeypatch.setattr(endpoint.client, "_timeout_s", 8.0)
    size = max(api.version(stack.tenant, m, 1)["memory_bytes"] or 0 for m in ("m0", "m1"))
    _set_budget(stack, size * 20)  # room for all: what the cold model waits for is a load worker
    _register(stack, "fresh", "pass", tmp_path)
    keys = []
    for _ in range(2):
        tenant = api.tenant()
        _register(stack, "stuck", "import time; time.sleep(100000)", tmp_path, tenant=tenant)
        keys.append(api.key(tenant, "consumer"))
    try:
        with ThreadPoolExecutor(2) as pool:
            hung = [pool.submit(stack.infer, "stuck", key=key) for key in keys]
            time.sleep(0.5)
            started = time.monotonic()
            answer = stack.infer("fresh")
            took = time.monotonic() - started
            assert answer.status_code == 200, answer.text
            assert took < 6, f"served after {took:.1f} s: it waited for a hanging load's timeout"
            assert [f.result().status_code for f in hung] == [503, 503]
    finally:
        deadline = time.monotonic() + 15  # the hanging loads end at their timeout (their stubs ended)
        while any(_short(n) == "stuck" for n in sizes.stubs(stack.pid).values()):
            assert time.monotonic() < deadline, "a hanging load's stub outlived its timeout"
            time.sleep(0.2)


def _triton_states(stack: Stack) -> dict[str, str]:
    return {_short(m["name"]): m.get("state", "") for m in stack.triton.client.repository_index()}


def test_one_tenants_burst_of_cold_models_does_not_push_out_another_tenants(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tenant shares (`CP_TENANT_MEMORY_SHARE`, here 0.5): tenant A holds three models (one pinned), within
    its half of the budget; tenant B then asks for four cold models, one after another, twice round. B
    makes room from its own models (it is over its half), so A's stay resident and answer without a load;
    with no share B's next cold model evicts A's least recently used one (the contrast at the end)."""
    api = stack.api
    reconciler = api.state.reconciler
    assert reconciler is not None and reconciler.budgets is not None
    size = _hold(stack, ("m0", "m3"))
    other = api.tenant()
    consumer = api.key(other, "consumer")
    burst = ["b0", "b1", "b2", "b3"]
    for name in burst:
        _register(stack, name, "pass", tmp_path, tenant=other)
    monkeypatch.setattr(reconciler.budgets, "tenant_share", 0.5)
    monkeypatch.setattr(reconciler.budgets, "share_idle_s", 120.0)
    _set_budget(stack, int(size * 6.5))  # A's three and three more: each tenant's half is 3.25 models
    evicted_before, loads_before = _evictions(stack), stack.loads()
    for name in burst * 2:
        assert stack.infer(name, key=consumer).status_code == 200
        assert stack.loaded() >= {"m0", "m1", "m3"}, f"B's {name} pushed out A's models: {stack.loaded()}"
    evicted = _evictions(stack) - evicted_before
    assert stack.loads() - loads_before == 8, "every request of B's was cold (4 models in B's room for 3)"
    assert evicted["tenant_share"] >= 4, f"LRU alone would have evicted A's models first: {evicted}"
    assert len({n for n in stack.loaded() if n in burst}) == 3
    monkeypatch.setattr(reconciler.budgets, "tenant_share", None)  # the contrast: no share
    cold = next(n for n in burst if n not in stack.loaded())
    assert stack.infer(cold, key=consumer).status_code == 200
    gone = {"m0", "m3"} - stack.loaded()
    assert gone == {"m0"}, f"with no share the LRU (A's m0) makes room: {stack.loaded()}"
    assert stack.infer("m3").status_code == 200
    assert stack.loads() - loads_before == 9, "A's m3 answered without a load"


FORKS = (
    "import os, time\n"
    "        ready, told = os.pipe()\n"
    "        self.worker = os.fork()  # a worker process, as multiprocessing starts one\n"
    "        if self.worker == 0:\n"
    "            held = b'w' * (48 * 2**20)\n"
    "            os.write(told, b'.')\n"
    "            time.sleep(600)\n"
    "            os._exit(0)\n"
    "        os.read(ready, 1)  # the worker is ready"
)


def _workers(stack: Stack, model: str) -> set[int]:
    """Running processes `model`'s stubs started (not the stubs; not an evicted one's, a zombie)."""
    members = sizes.processes(stack.pid).items()
    return {p for p, m in members if _short(m.model) == model and p != m.stub and _state(p) not in ("Z", "?")}


def test_processes_a_model_starts_count_in_its_memory_and_end_with_it(stack: Stack, tmp_path: Path) -> None:
    """A model that forks a worker holding 48 MiB in `initialize()`: the worker's memory is the version's
    (it was not counted: the budget ran 48 MiB short per such model), an eviction ends it with the stub
    (it was re-parented to init and held its memory for good), and so does Triton's own unload of a
    deleted version (Triton ends the stub, the control plane what it left running)."""
    api, tenant = stack.api, stack.tenant
    _set_budget(stack, 2**40)  # nothing evicted while the model is measured
    _register(stack, "forks", FORKS, tmp_path)
    plain = api.version(tenant, "m0", 1)["memory_bytes"]
    assert stack.infer("forks").status_code == 200
    size = api.version(tenant, "forks", 1)["memory_bytes"]
    # Its stub and worker by their share of pages (PSS: they share the stub's copy on write): the worker's
    # own 48 MiB and at least a few MiB of interpreter; its stub alone is about a plain model's size.
    assert size >= 56 * 2**20, f"the worker's 48 MiB not counted: {size} (a plain model: {plain})"
    (worker,) = _workers(stack, "forks")
    _set_budget(stack, int(plain * 2.5))  # m1 (pinned) and one more plain model: the others go
    assert stack.infer("m0").status_code == 200
    assert "forks" not in stack.loaded()
    assert _state(worker) in ("Z", "?"), "evicted with its stub"

    _set_budget(stack, 2**40)
    assert stack.infer("forks").status_code == 200
    (worker,) = _workers(stack, "forks")
    deleted = api.client.delete(f"/v1/tenants/{tenant}/models/forks/versions/1", headers=api.headers())
    assert deleted.status_code == 200, deleted.text
    deadline = time.monotonic() + 15
    while _state(worker) not in ("Z", "?"):
        assert time.monotonic() < deadline, "the worker of a deleted version still runs"
        time.sleep(0.2)
    assert "forks" not in stack.loaded()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_request_in_flight_through_another_replica_survives_the_leaders_eviction(
    stack: Stack, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leader cannot see another replica's requests in flight until that replica records its uses
    (every second). Here it never does (its recorder is stopped), so the leader takes the slow m2, busy
    for 3 s through the second control plane, for the least recently used idle model, and evicts it
    (ending its stub under the request) to load a cold one. That request is not failed: the second
    replica sees the version's routes gone, waits for it like a cold request, and sends it again once."""
    _hold(stack, ("m2", "m0", "m3"))  # m2 the least recently used of the unpinned; nothing else held
    with serve(stack.settings_for()) as second:
        monkeypatch.setattr(second.state.residency, "flush", lambda: None)
        evicted_before, loads_before = _evictions(stack), stack.loads()
        with ThreadPoolExecutor(1) as pool:
            if protocol == "http":
                slow = pool.submit(_infer_http, stack, second, "m2", stack.consumer)
            else:
                slow = pool.submit(_infer_grpc, second, "m2", stack.consumer)
            time.sleep(1.0)  # at Triton, in the stub's execute()
            assert stack.infer("m4").status_code == 200  # cold: the leader makes room from m2
            answer = slow.result()
        assert answer == [2.0, 4.0], answer
        evicted = _evictions(stack) - evicted_before
        assert evicted["lru"] >= 1, f"the leader evicted nothing: the case was not exercised ({evicted})"
        assert stack.loads() - loads_before >= 2, "m4 loaded, then m2 again for the request sent again"


def _infer_http(stack: Stack, api: Api, model: str, key: str) -> list[float]:
    """OUTPUT0 of [1, 2] through `api`'s HTTP port."""
    response = stack.infer(model, client=api.client, key=key)
    assert response.status_code == 200, response.text
    return list(response.json()["outputs"][0]["data"])


def _infer_grpc(api: Api, model: str, key: str) -> list[float]:
    """OUTPUT0 of [1, 2] through `api`'s gRPC port (stock tritonclient)."""
    import tritonclient.grpc as triton_grpc

    with triton_grpc.InferenceServerClient(f"127.0.0.1:{api.settings.grpc_port}") as client:
        tensor = triton_grpc.InferInput("INPUT0", [2], "FP32")
        tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        result = client.infer(model, [tensor], model_version="1", headers={"authorization": f"Bearer {key}"})
    return list(result.as_numpy("OUTPUT0").tolist())
