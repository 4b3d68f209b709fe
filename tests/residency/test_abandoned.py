"""Requests that wait for a cold version's load, against the real bundled Triton: a client that goes away
(HTTP connection closed, gRPC deadline or cancel) stops waiting at once and is never sent to Triton, and
the tenant's concurrency limit refuses before the wait, not after it.

Found by an adversarial run: abandoned requests kept waiting until the load, counted as reasons to keep
the version, were then sent to Triton, and took the tenant's slots from live requests, which got 429
after waiting out the whole load; the hits counter went negative.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as triton_grpc
from sqlalchemy import select
from tritonclient.utils import InferenceServerException

from control_plane.db import migrate
from control_plane.db.models import Alias, Model, ModelVersion
from control_plane.db.session import transaction
from control_plane.errors import NotFound
from control_plane.tritonserver import TritonDistribution
from tests.fixtures_triton import RunningTriton, private_triton
from tests.support.api import Api
from tests.support.served import serve, stack_settings
from tests.support.triton_models import MODEL

LIMIT = 4  # the tenant's concurrent requests
LOAD_S = 2.0  # each model's initialize sleeps this long: a wait long enough to walk away from
SPEC: dict[str, Any] = {
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
    "max_batch_size": 0,
}
BODY = orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]})


@dataclass
class Cold:
    api: Api
    triton: RunningTriton
    tenant: str
    consumer: str
    models: Iterator[str]

    def name_of(self, model: str) -> str:
        """The version's Triton model name."""
        detail = self.api.client.get(
            f"/v1/tenants/{self.tenant}/models/{model}/versions/1", headers=self.api.headers()
        ).json()
        return str(detail["triton_name"])

    def infer(self, model: str, client: httpx.Client | None = None) -> httpx.Response:
        return (client or self.api.client).post(
            f"/v2/models/{model}/versions/1/infer",
            content=BODY,
            headers={"Authorization": f"Bearer {self.consumer}", "Content-Type": "application/json"},
            timeout=60,
        )

    def inferences(self, model: str) -> int:
        """How many requests Triton has run for the version (after waiting for its load to finish)."""
        name = self.name_of(model)
        deadline = time.monotonic() + 30
        while not self.triton.client.is_model_ready(name):
            assert time.monotonic() < deadline, f"{model} never loaded"
            time.sleep(0.1)
        stats = httpx.get(f"{self.triton.http_url}/v2/models/{name}/stats", timeout=10).json()
        return int(stats["model_stats"][0]["inference_count"])

    def served_once(self, model: str) -> bool:
        """Whether Triton has run exactly one request for the version: it counts a request after its
        answer is sent, so the count may lag the answer a moment (polled up to 5 s)."""
        deadline = time.monotonic() + 5
        while (count := self.inferences(model)) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        return count == 1

    def settled(self, model: str) -> None:
        """Nothing of this tenant waits or holds a slot any more (within 2 s)."""
        state, name = self.api.state, self.name_of(model)
        deadline = time.monotonic() + 2
        while state.residency.waiting(name) or any(state.limits._in_flight.values()):
            assert time.monotonic() < deadline, (
                f"still waiting: {state.residency.waiting(name)}; slots: {state.limits._in_flight}"
            )
            time.sleep(0.02)


@pytest.fixture(scope="module")
def cold(
    create_database: Callable[[], str],
    s3_endpoint: str,
    triton_distribution: TritonDistribution,
    triton_backend_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cold]:
    url = create_database()
    migrate.upgrade(url)
    names = [f"c{i}" for i in range(9)]
    with ExitStack() as stack:
        triton = stack.enter_context(
            private_triton(
                tmp_path_factory,
                "abandoned",
                distribution=triton_distribution,
                backend_dir=triton_backend_dir,
            )
        )
        assert triton.repository is not None
        settings = stack_settings(
            database_url=url,
            s3_endpoint=s3_endpoint,
            triton_http_url=triton.http_url,
            triton_grpc_url=triton.process.grpc_url,
            repository=triton.repository,
            s3_bucket=f"artifacts-{uuid.uuid4().hex[:12]}",
            reconcile_interval_s=1.0,
            tenant_max_concurrency=LIMIT,
        )
        api = stack.enter_context(serve(settings))
        tenant = api.tenant()
        for name in names:
            assert api.create_model(tenant, name=name, format="python", **SPEC).status_code == 201
            source = tmp_path_factory.mktemp(name) / "model.py"
            source.write_text(MODEL.format(init=f"import time; time.sleep({LOAD_S})", scale=2.0, offset=0.0))
            assert api.upload(tenant, name, source).status_code == 201
        yield Cold(api, triton, tenant, api.key(tenant, "consumer"), iter(names))


def test_an_http_client_that_hangs_up_during_the_load_stops_waiting_and_is_never_sent(cold: Cold) -> None:
    model = next(cold.models)
    stats = cold.api.state.residency.stats
    abandoned = stats.abandoned
    port = int(str(cold.api.client.base_url).rsplit(":", 1)[1])
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                b"POST /v2/models/%s/versions/1/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (model.encode(), cold.consumer.encode(), len(BODY), BODY)
            )
            time.sleep(0.3)  # the request waits for the load
        # closed: the wait ends now, not when the load does
    cold.settled(model)
    assert stats.abandoned - abandoned == 3
    assert cold.inferences(model) == 0, "a request whose client left was sent to Triton after the load"
    assert cold.infer(model).status_code == 200  # the load it asked for went on: the next one is served
    assert cold.served_once(model)


PREDICT = orjson.dumps({"inputs": {"INPUT0": [1.0, 2.0]}})


def _alias_without_a_load(cold: Cold, model: str) -> None:
    """`production` -> version 1, written straight to the registry (a promote would load it)."""
    state = cold.api.state
    with transaction(state.session_factory) as session:
        row = session.scalars(select(Model).where(Model.name == model)).one()
        version_id = session.scalars(select(ModelVersion.id).where(ModelVersion.model_id == row.id)).one()
        session.add(Alias(model_id=row.id, name="production", version_id=version_id))
        tenant_id = row.tenant_id
    deadline = time.monotonic() + 5
    while True:  # the routing table is rebuilt after the commit
        try:
            state.router.resolve(tenant_id=tenant_id, model=model)
            return
        except NotFound:
            assert time.monotonic() < deadline, "the alias never reached the routing table"
            time.sleep(0.05)


@pytest.mark.parametrize("path", ["http/1.0", "predict"])
def test_a_client_that_hangs_up_on_the_asgi_path_stops_waiting_too(cold: Cold, path: str) -> None:
    """Requests the fast path leaves to the ASGI app (HTTP/1.0, Expect: 100-continue, pipelined, and
    `/v1/predict`) learn of a hang-up from uvicorn's disconnect message: they waited out the load and
    were then sent to Triton."""
    model = next(cold.models)
    stats = cold.api.state.residency.stats
    abandoned = stats.abandoned
    port = int(str(cold.api.client.base_url).rsplit(":", 1)[1])
    if path == "predict":
        _alias_without_a_load(cold, model)
        head, body = b"POST /v1/predict/%s HTTP/1.1" % model.encode(), PREDICT
    else:
        head, body = b"POST /v2/models/%s/versions/1/infer HTTP/1.0" % model.encode(), BODY
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                head + b"\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (cold.consumer.encode(), len(body), body)
            )
            time.sleep(0.3)  # the request waits for the load
    cold.settled(model)
    assert stats.abandoned - abandoned == 2
    assert cold.inferences(model) == 0, "a request whose client left was sent to Triton after the load"
    if path == "predict":
        served = cold.api.client.post(
            f"/v1/predict/{model}", content=PREDICT, headers={"Authorization": f"Bearer {cold.consumer}"}
        )
        assert served.status_code == 200 and served.json()["outputs"]["OUTPUT0"] == [2.0, 4.0], served.text
    else:
        assert cold.infer(model).status_code == 200
    assert cold.served_once(model)


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_grpc_call_that_times_out_or_is_cancelled_during_the_load_stops_waiting(
    cold: Cold, how: str
) -> None:
    model = next(cold.models)
    tensor = triton_grpc.InferInput("INPUT0", [2], "FP32")
    tensor.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    headers = {"authorization": f"Bearer {cold.consumer}"}
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{cold.api.settings.grpc_port}") as client:
        if how == "deadline":
            with pytest.raises(InferenceServerException) as caught:
                client.infer(model, [tensor], model_version="1", headers=headers, client_timeout=0.5)
            assert caught.value.status() == "StatusCode.DEADLINE_EXCEEDED"
        else:
            outcome: list[Any] = []
            future = client.async_infer(
                model,
                [tensor],
                lambda result, error: outcome.append(error),
                model_version="1",
                headers=headers,
            )
            time.sleep(0.5)
            future.cancel()
        cold.settled(model)
        assert cold.inferences(model) == 0, "a call its client gave up on was sent to Triton after the load"
        result = client.infer(model, [tensor], model_version="1", headers=headers)
        assert result.as_numpy("OUTPUT0").tolist() == [2.0, 4.0]


def test_the_tenant_limit_refuses_before_the_wait_and_hits_never_go_negative(cold: Cold) -> None:
    model = next(cold.models)
    stats = cold.api.state.residency.stats

    def timed(_: int) -> tuple[int, float]:
        started = time.monotonic()
        status = cold.infer(model, client=client).status_code
        return status, time.monotonic() - started

    with (
        ThreadPoolExecutor(2 * LIMIT) as pool,
        httpx.Client(base_url=str(cold.api.client.base_url)) as client,
    ):
        answers = list(pool.map(timed, range(2 * LIMIT)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * LIMIT + [429] * LIMIT, statuses
    refused = max(seconds for status, seconds in answers if status == 429)
    served = min(seconds for status, seconds in answers if status == 200)
    assert served >= LOAD_S  # the served ones waited for the load
    assert refused < served - LOAD_S / 2, "refused after waiting for the load, not before it"
    metrics = cold.api.client.get("/metrics", headers=cold.api.headers()).text
    hits = next(line for line in metrics.splitlines() if line.startswith("cp_residency_hits_total"))
    assert float(hits.rsplit(" ", 1)[1]) >= 0 and stats.hits >= 0
    cold.settled(model)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_metadata_of_a_cold_version_loads_it_and_readiness_answers_without_loading(
    cold: Cold, protocol: str
) -> None:
    """Metadata and config of a version not loaded answered 503 with a Retry-After that never came true
    (nothing loaded it; gRPC said UNAVAILABLE "not loaded right now: ... not found"), and readiness said
    not ready for ever. Stock clients ask for metadata before their first inference. Now metadata and
    config wait for the version's load, as an inference does; readiness answers ready without loading
    it (a request would load it; loading for readiness checks would load every model a health check
    lists)."""
    model = next(cold.models)
    name = cold.name_of(model)
    headers = {"authorization": f"Bearer {cold.consumer}"}  # gRPC metadata keys are lower-case
    grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{cold.api.settings.grpc_port}")
    try:
        if protocol == "http":
            ready = cold.api.client.get(f"/v2/models/{model}/versions/1/ready", headers=headers)
            assert ready.status_code == 200, ready.text
        else:
            assert grpc.is_model_ready(model, "1", headers=headers) is True
        time.sleep(0.5)
        assert name not in cold.api.state.residency.resident and not cold.triton.client.is_model_ready(name)

        if protocol == "http":
            metadata = cold.api.client.get(f"/v2/models/{model}/versions/1", headers=headers, timeout=60)
            assert metadata.status_code == 200, metadata.text
            assert metadata.json()["name"] == model and name not in metadata.text
            assert "load;dur=" in metadata.headers["server-timing"]
            config = cold.api.client.get(f"/v2/models/{model}/versions/1/config", headers=headers)
            assert config.status_code == 200 and name not in config.text, config.text
        else:
            answer = grpc.get_model_metadata(model, "1", headers=headers, client_timeout=60)
            assert answer.name == model and [t.name for t in answer.inputs] == ["INPUT0"]
            assert grpc.get_model_config(model, "1", headers=headers).config.name == model
        assert cold.triton.client.is_model_ready(name)
        assert cold.inferences(model) == 0  # loaded, not inferred
    finally:
        grpc.close()


def test_a_metadata_request_whose_client_hangs_up_stops_waiting(cold: Cold) -> None:
    """A GET's handler reads no body: the hang-up watch took the empty body's message for the end and
    stopped watching."""
    model = next(cold.models)
    stats = cold.api.state.residency.stats
    abandoned = stats.abandoned
    port = int(str(cold.api.client.base_url).rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /v2/models/%s/versions/1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
            % (model.encode(), cold.consumer.encode())
        )
        time.sleep(0.3)  # the request waits for the load
    cold.settled(model)
    assert stats.abandoned - abandoned == 1
