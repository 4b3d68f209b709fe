"""Every row of the error table that applies to inference, with a clear JSON body, and tenant isolation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.fleet.instances import TritonEndpoint
from tests.support.api import Api
from tests.support.deploy import deploy_onnx, deploy_python, deploy_slow_python
from tests.support.procs import free_port

X = [[0.5, -1.0, 2.0, 0.25]]
BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}
SLOW_BODY = {"inputs": [{"name": "INPUT0", "shape": [2], "datatype": "FP32", "data": [1.0, 2.0]}]}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _assert_v2_error(response: httpx.Response, status: int, kind: str, text: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["kind"] == kind
    assert text in body["error"]
    assert "Traceback" not in response.text


@pytest.fixture
def served(make_served: Callable[..., Api]) -> Api:
    return make_served()


def test_401_without_with_bad_and_with_revoked_keys(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    url = f"/v2/models/{d.model}/infer"
    _assert_v2_error(served.client.post(url, json=BODY), 401, "Unauthorized", "Authorization")
    _assert_v2_error(
        served.client.post(url, json=BODY, headers=_bearer("cp_000000000000_nope")), 401, "Unauthorized"
    )
    _assert_v2_error(served.client.post(url, json=BODY, headers=_bearer("garbage")), 401, "Unauthorized")
    predict = served.client.post(f"/v1/predict/{d.model}", json={"inputs": {"x": X}})
    assert predict.status_code == 401
    assert predict.json()["error"] == "Unauthorized"

    keys = served.client.get(f"/v1/tenants/{d.tenant}/keys", headers=served.headers()).json()
    consumer = next(k for k in keys if d.consumer_key.split("_")[1] == k["prefix"])
    assert served.client.post(url, json=BODY, headers=_bearer(d.consumer_key)).status_code == 200
    revoked = served.client.delete(f"/v1/tenants/{d.tenant}/keys/{consumer['id']}", headers=served.headers())
    assert revoked.status_code == 200
    _assert_v2_error(served.client.post(url, json=BODY, headers=_bearer(d.consumer_key)), 401, "Unauthorized")


def test_other_tenants_models_and_management_paths_are_404(served: Api, tmp_path: Path) -> None:
    mine = deploy_onnx(served, tmp_path)
    other = deploy_onnx(served, tmp_path, model="secret")
    key = mine.consumer_key
    _assert_v2_error(
        served.client.post("/v2/models/secret/infer", json=BODY, headers=_bearer(key)), 404, "NotFound"
    )
    _assert_v2_error(served.client.get("/v2/models/secret", headers=_bearer(key)), 404, "NotFound")
    hidden = served.client.get(f"/v1/tenants/{other.tenant}/models", headers=_bearer(mine.publisher_key))
    assert hidden.status_code == 404
    assert hidden.json() == {"error": "NotFound", "detail": f"tenant '{other.tenant}' not found"}
    forbidden = served.client.get(f"/v1/tenants/{mine.tenant}/models", headers=_bearer(key))
    assert forbidden.status_code == 403
    assert forbidden.json()["error"] == "Forbidden"


def test_404_for_unknown_model_alias_and_version(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    headers = _bearer(d.consumer_key)
    _assert_v2_error(served.client.post("/v2/models/nope/infer", json=BODY, headers=headers), 404, "NotFound")
    alias = served.client.post(
        f"/v2/models/{d.model}/infer", json=BODY, headers={**headers, "X-Model-Alias": "canary"}
    )
    _assert_v2_error(alias, 404, "NotFound", "no alias 'canary'")
    version = served.client.post(f"/v2/models/{d.model}/versions/99/infer", json=BODY, headers=headers)
    _assert_v2_error(version, 404, "NotFound", "version 99")
    _assert_v2_error(served.client.get(f"/v2/models/{d.model}/bogus/path", headers=headers), 404, "NotFound")


def test_400_for_a_wrong_shape_names_the_input_before_triton_sees_it(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    wrong = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    response = served.client.post(f"/v2/models/{d.model}/infer", json=wrong, headers=_bearer(d.consumer_key))
    _assert_v2_error(response, 400, "BadRequest", "input 'x' has shape [1, 3]; the model expects [-1, 4]")
    assert d.triton_name not in response.text
    missing = {
        "inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]
    }
    response = served.client.post(
        f"/v2/models/{d.model}/infer", json=missing, headers=_bearer(d.consumer_key)
    )
    _assert_v2_error(response, 400, "BadRequest", "unknown input 'nope'; the model's inputs are 'x'")


TWO_INPUTS = """\
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("s", pb_utils.get_input_tensor_by_name(r, "a").as_numpy())]
            )
            for r in requests
        ]
"""


def test_tritons_own_400_is_passed_on_without_internal_names(served: Api, tmp_path: Path) -> None:
    spec = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [-1, 2]},
            {"name": "b", "datatype": "FP32", "shape": [-1, 2]},
        ],
        "outputs": [{"name": "s", "datatype": "FP32", "shape": [-1, 2]}],
        "max_batch_size": 4,
    }
    d = deploy_python(served, tmp_path, name="pair", source=TWO_INPUTS, spec=spec)
    mismatched = {  # each input fits the model; their batch sizes differ, which only Triton checks
        "inputs": [
            {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]},
            {"name": "b", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]},
        ]
    }
    response = served.client.post(
        f"/v2/models/{d.model}/infer", json=mismatched, headers=_bearer(d.consumer_key)
    )
    _assert_v2_error(response, 400, "BadRequest", "batch")
    assert d.triton_name not in response.text
    assert d.model in response.json()["error"]


def test_413_for_a_body_over_the_limit(make_served: Callable[..., Api], tmp_path: Path) -> None:
    served = make_served(max_request_bytes=512)
    d = deploy_onnx(served, tmp_path)
    big = {"inputs": [{"name": "x", "shape": [64, 4], "datatype": "FP32", "data": [0.0] * 256}]}
    response = served.client.post(f"/v2/models/{d.model}/infer", json=big, headers=_bearer(d.consumer_key))
    _assert_v2_error(response, 413, "PayloadTooLarge")


def test_429_rate_limit_with_retry_after(make_served: Callable[..., Api], tmp_path: Path) -> None:
    served = make_served(tenant_rate_limit=0.5, tenant_burst=2)
    d = deploy_onnx(served, tmp_path)
    url, headers = f"/v2/models/{d.model}/infer", _bearer(d.consumer_key)
    statuses = [served.client.post(url, json=BODY, headers=headers) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    _assert_v2_error(statuses[2], 429, "RateLimited")
    assert int(statuses[2].headers["retry-after"]) >= 1
    other = deploy_onnx(served, tmp_path)  # another tenant has its own bucket
    assert served.client.post(url, json=BODY, headers=_bearer(other.consumer_key)).status_code == 200


@pytest.mark.parametrize("first_path", ["v2", "predict"])
def test_429_concurrency_limit(make_served: Callable[..., Api], tmp_path: Path, first_path: str) -> None:
    served = make_served(tenant_max_concurrency=1)
    d = deploy_slow_python(served, tmp_path, seconds=1.0)
    url, headers = f"/v2/models/{d.model}/infer", _bearer(d.consumer_key)
    first_url, first_body = (
        (url, SLOW_BODY)
        if first_path == "v2"
        else (f"/v1/predict/{d.model}", {"inputs": {"INPUT0": [1.0, 2.0]}})
    )
    tenant_id = served.state.router.table.tenant_ids[d.tenant]
    registry = served.state.metrics.registry
    results: list[int] = []

    def call() -> None:
        with httpx.Client(base_url=served.client.base_url, timeout=30) as client:
            results.append(client.post(first_url, json=first_body, headers=headers).status_code)

    first = threading.Thread(target=call)
    first.start()

    def counted() -> tuple[int, float | None, int]:
        """The tenant's slot, the in-flight gauge, and what keeps the keep-warm janitor off the version:
        taken one after the other as the request starts, so all three are waited for."""
        return (
            served.state.limits.in_flight(tenant_id),
            registry.get_sample_value("cp_inference_in_flight", {"protocol": "http"}),
            served.state.inflight[d.triton_name],
        )

    deadline = time.monotonic() + 10
    while counted() != (1, 1.0, 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    seen = counted()
    second = served.client.post(url, json=SLOW_BODY, headers=headers)
    first.join()
    assert seen == (1, 1.0, 1)
    assert registry.get_sample_value("cp_inference_in_flight", {"protocol": "http"}) == 0.0
    assert served.state.inflight[d.triton_name] == 0
    _assert_v2_error(second, 429, "RateLimited", "in flight")
    assert results == [200]
    released = served.client.post(url, json=SLOW_BODY, headers=headers)
    assert released.status_code == 200  # the slot was released


def test_503_when_triton_is_unreachable(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    dead = f"http://127.0.0.1:{free_port()}"
    live = served.state.upstream.endpoints
    served.state.upstream.endpoints = [
        TritonEndpoint.connect(
            name="dead", http_url=dead, grpc_url="127.0.0.1:1", timeout_s=1, load_timeout_s=1
        )
    ]
    try:
        response = served.client.post(
            f"/v2/models/{d.model}/infer", json=BODY, headers=_bearer(d.consumer_key)
        )
    finally:
        served.state.upstream.endpoints = live
    _assert_v2_error(response, 503, "ServiceUnavailable", "the inference server is unavailable right now")
    assert dead.split("//")[1] not in response.text  # no internal address
    assert response.headers["retry-after"] == "5" or int(response.headers["retry-after"]) >= 1


def test_503_for_a_version_that_is_not_ready(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    source = tmp_path / "broken.py"
    source.write_text(
        "class TritonPythonModel:\n    def initialize(self, args):\n        raise RuntimeError('no')\n"
    )
    spec: dict[str, Any] = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
        "max_batch_size": 0,
    }
    assert served.create_model(d.tenant, name="broken", format="python", **spec).status_code == 201
    assert served.upload(d.tenant, "broken", source).status_code == 201
    assert served.wait_settled(d.tenant, "broken", 1)["state"] == "failed"
    response = served.client.post(
        "/v2/models/broken/versions/1/infer", json=SLOW_BODY, headers=_bearer(d.consumer_key)
    )
    _assert_v2_error(response, 503, "ServiceUnavailable", "not ready")
    assert int(response.headers["retry-after"]) >= 1


def test_504_when_triton_is_too_slow(make_served: Callable[..., Api], tmp_path: Path) -> None:
    served = make_served(upstream_timeout_s=0.5)
    d = deploy_slow_python(served, tmp_path, seconds=2.0)
    response = served.client.post(
        f"/v2/models/{d.model}/infer", json=SLOW_BODY, headers=_bearer(d.consumer_key)
    )
    _assert_v2_error(response, 504, "UpstreamTimeout")


@pytest.mark.parametrize("version", ["%C2%B2", "%D9%A1", "1" * 5000, "-1", "1.0"])
def test_a_version_that_is_not_ascii_digits_is_404_on_every_path(
    served: Api, tmp_path: Path, version: str
) -> None:
    """Superscript two and Arabic-Indic one are digits to str.isdigit: the first was a 500 (int() refused
    it), the second served version 1; 5000 digits were past int()'s limit, another 500."""
    d = deploy_onnx(served, tmp_path)
    headers = _bearer(d.consumer_key)
    base = f"/v2/models/{d.model}/versions/{version}"
    for answer in (
        served.client.get(base, headers=headers),  # metadata (the ASGI path)
        served.client.get(base + "/ready", headers=headers),
        served.client.post(base + "/infer", json=BODY, headers=headers),  # the fast path
        served.client.post(base + "/infer", json=BODY, headers={**headers, "Expect": "100-continue"}),
    ):
        _assert_v2_error(answer, 404, "NotFound", "of model")


@pytest.mark.parametrize("path", ["/ready?/infer", "/config?x=/infer", "s/infer", ""])
def test_only_an_infer_path_runs_an_inference_whatever_its_query(
    served: Api, tmp_path: Path, path: str
) -> None:
    """The fast path took any POST whose URL ended in /infer, query included: POST .../ready?/infer
    answered 200 with the model's outputs; POST /v2/models/infer inferred with a model named "infer"."""
    d = deploy_onnx(served, tmp_path)
    url = f"/v2/models/{d.model}{path}" if path else "/v2/models/infer"
    answer = served.client.post(url, json=BODY, headers=_bearer(d.consumer_key))
    assert answer.status_code in (404, 405), answer.text
    assert "outputs" not in answer.text


@pytest.mark.parametrize("value", [-1, "two", 1.5])
def test_a_bad_classification_parameter_is_the_clients_400(served: Api, tmp_path: Path, value: Any) -> None:
    """Triton answers such a parameter with a 500 "Unable to set 'classification'", which was passed on
    as 502 (the server's fault); gRPC's own INVALID_ARGUMENT was right."""
    d = deploy_onnx(served, tmp_path)
    body = {**BODY, "outputs": [{"name": "y", "parameters": {"classification": value}}]}
    answer = served.client.post(f"/v2/models/{d.model}/infer", json=body, headers=_bearer(d.consumer_key))
    _assert_v2_error(answer, 400, "BadRequest", "classification")
    assert d.triton_name not in answer.text
