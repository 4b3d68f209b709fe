"""A tenant's own inference limits (request rate with a burst, requests in flight), served by a real uvicorn
on Postgres and the bundled Triton: an admin sets them with PATCH /v1/tenants/{t}; they hold for that tenant
alone, over HTTP and gRPC (stock tritonclient), on every replica, and null puts the default back."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from pydantic import ValidationError
from tritonclient.utils import InferenceServerException

from control_plane.settings import Settings
from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.procs import free_port
from tests.support.triton_models import MODEL, PYTHON_SPEC


@pytest.fixture
def served(make_served: Callable[..., Api]) -> Api:
    return make_served()


BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}]}


def deploy(served: Api, tmp_path: Path, *, init: str = "pass", load: bool = True) -> tuple[str, str]:
    """A tenant with a Python-backend model `m` (loaded unless not `load`); the tenant and a consumer key."""
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="python", **PYTHON_SPEC).status_code == 201
    source = tmp_path / f"{tenant}.py"
    source.write_text(MODEL.format(init=init, scale=2.0, offset=0.0))
    assert served.upload(tenant, "m", source).status_code == 201
    if load:
        assert served.load(tenant, "m", 1)["state"] == "ready"
    return tenant, served.key(tenant, "consumer")


def infer(served: Api, key: str) -> httpx.Response:
    return served.client.post(
        "/v2/models/m/versions/1/infer", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def set_limits(served: Api, tenant: str, key: str | None = None, **limits: Any) -> httpx.Response:
    answer: httpx.Response = served.client.patch(
        f"/v1/tenants/{tenant}", json={"limits": limits}, headers=served.headers(key)
    )
    return answer


def applied(served: Api, tenant: str, expect: bool = True) -> None:
    """Wait until the replica's limits know (or no longer know) the tenant's own (its routing table)."""
    tenant_id = served.state.router.table.tenant_ids[tenant]
    deadline = time.monotonic() + 15
    while (tenant_id in served.state.limits.own) != expect:
        assert time.monotonic() < deadline, "the replica never took the tenant's limits"
        time.sleep(0.05)


def test_a_tenants_own_rate_limit_holds_for_it_alone_over_http_and_grpc(
    make_served: Callable[..., Api], triton: RunningTriton, tmp_path: Path
) -> None:
    # the defaults: unlimited
    served = make_served(grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url])
    limited, key = deploy(served, tmp_path)
    _, other_key = deploy(served, tmp_path)

    answer = set_limits(served, limited, rate_per_s=0.1, burst=2)
    assert answer.status_code == 200, answer.text
    assert answer.json()["limits"] == {"rate_per_s": 0.1, "burst": 2, "max_concurrency": None}
    applied(served, limited)

    statuses = [infer(served, key).status_code for _ in range(3)]
    refused = infer(served, key)
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{served.settings.grpc_port}") as client:
        given = triton_grpc.InferInput("INPUT0", [2], "FP32")
        given.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("m", [given], model_version="1", headers={"authorization": f"Bearer {key}"})
        beside = client.infer(
            "m", [given], model_version="1", headers={"authorization": f"Bearer {other_key}"}
        )
    others = [infer(served, other_key).status_code for _ in range(6)]

    assert statuses == [200, 200, 429]
    assert refused.status_code == 429 and refused.json()["kind"] == "RateLimited"  # KServe v2's shape
    assert refused.json()["error"] == "tenant request rate over 0.1/s"
    assert refused.headers["retry-after"] in ("9", "10")  # a token every 10 s, the last taken just now
    assert caught.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert beside.as_numpy("OUTPUT0").tolist() == [2.0, 4.0]
    assert others == [200] * 6

    back = set_limits(served, limited, rate_per_s=None, burst=None)  # the default again: unlimited
    assert back.json()["limits"] == {"rate_per_s": None, "burst": 100, "max_concurrency": None}
    applied(served, limited, expect=False)
    assert [infer(served, key).status_code for _ in range(4)] == [200] * 4


def test_a_tenants_own_concurrency_limit_counts_a_request_waiting_for_a_load(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    served = make_served(tenant_max_concurrency=8)
    tenant, key = deploy(served, tmp_path, init="import time; time.sleep(3)", load=False)
    assert set_limits(served, tenant, max_concurrency=1).json()["limits"]["max_concurrency"] == 1
    applied(served, tenant)
    first: list[httpx.Response] = []
    waiting = threading.Thread(target=lambda: first.append(infer(served, key)))
    waiting.start()
    deadline = time.monotonic() + 10
    tenant_id = served.state.router.table.tenant_ids[tenant]
    while served.state.limits.in_flight(tenant_id) < 1:  # the cold request holds its slot while it waits
        assert time.monotonic() < deadline
        time.sleep(0.02)

    second = infer(served, key)
    waiting.join(timeout=60)

    assert second.status_code == 429, second.text
    assert second.json()["error"] == "tenant has 1 requests in flight (limit 1)"
    assert first[0].status_code == 200, first[0].text
    assert infer(served, key).status_code == 200  # the slot came back with the answer


def test_limits_set_through_one_replica_hold_on_another(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    first = make_served()
    second = make_served()  # the same registry (Postgres), its own process state
    tenant, key = deploy(first, tmp_path)
    assert set_limits(first, tenant, rate_per_s=0.01, burst=1).status_code == 200
    applied(second, tenant)  # by the registry's notification, not a restart

    assert [infer(second, key).status_code for _ in range(2)] == [200, 429]


BAD_LIMITS: list[dict[str, Any]] = [
    {"rate_per_s": -1},
    {"rate_per_s": "5"},
    {"burst": 0},
    {"burst": 2.5},
    {"max_concurrency": -1},
    {"max_concurrency": "8"},
    {"rate_per_s": 1e9},
    {"requests": 5},
    {"rate_per_s": 5e-324},  # its Retry-After overflowed: every request of the tenant was a 500
    {"rate_per_s": 0.0005},
    {},
]


def test_limits_out_of_range_or_of_the_wrong_type_are_422(served: Api) -> None:
    tenant = served.tenant()
    answers = [set_limits(served, tenant, **limits) for limits in BAD_LIMITS]
    refusals = [(a.status_code, a.json()["error"]) for a in answers]
    assert refusals == [(422, "InvalidRequest")] * len(BAD_LIMITS)
    shown = served.client.get(f"/v1/tenants/{tenant}", headers=served.headers()).json()
    assert shown["limits"] == {"rate_per_s": None, "burst": 100, "max_concurrency": None}  # nothing changed


def test_only_admins_set_limits_and_each_change_is_audited(served: Api) -> None:
    tenant = served.tenant()
    publisher = served.key(tenant)
    refused = set_limits(served, tenant, publisher, rate_per_s=1000)
    empty = served.client.patch(f"/v1/tenants/{tenant}", json={}, headers=served.headers())
    assert set_limits(served, tenant, rate_per_s=50, max_concurrency=0).status_code == 200
    assert set_limits(served, tenant, rate_per_s=50).status_code == 200  # no change: not audited again
    shown = served.client.get(f"/v1/tenants/{tenant}", headers=served.headers(publisher)).json()
    events = served.client.get(
        "/v1/audit", params={"tenant": tenant, "action": "tenant.limits"}, headers=served.headers()
    ).json()

    assert refused.status_code == 403
    assert empty.status_code == 422 and "quota" in empty.json()["detail"]
    assert shown["limits"] == {"rate_per_s": 50.0, "burst": 100, "max_concurrency": None}  # 0: unlimited
    assert [(e["before"], e["after"]) for e in events] == [
        ({"rate_per_s": None, "max_concurrency": None}, {"rate_per_s": 50.0, "max_concurrency": 0})
    ]


@pytest.mark.parametrize("setting", ["tenant_rate_limit", "api_tenant_rate_limit"])
def test_a_default_rate_below_the_least_is_refused_at_start_up(setting: str) -> None:
    with pytest.raises(ValidationError, match=r"at least 0\.001 requests a second"):
        Settings.model_validate({setting: 1e-9})
    assert getattr(Settings.model_validate({setting: 0}), setting) == 0  # 0: unlimited
