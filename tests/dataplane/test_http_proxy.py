"""Stock tritonclient.http against the proxy gives what Triton itself gives, under the client's own names."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http

from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx, deploy_slow_python
from tests.support.v2 import server_timing

X = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0]], dtype=np.float32)


@pytest.fixture
def served(make_served: Callable[..., Api]) -> Api:
    return make_served()


def _client(api: Api) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(api.client.base_url.netloc.decode(), network_timeout=60)


def _direct(api: Api) -> triton_http.InferenceServerClient:
    return triton_http.InferenceServerClient(api.settings.triton_urls[0].split("://")[1], network_timeout=60)


def _infer(
    client: triton_http.InferenceServerClient, name: str, *, binary: bool, key: str | None = None, **kw
):
    tensor = triton_http.InferInput("x", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary)
    outputs = [triton_http.InferRequestedOutput("y", binary_data=binary)]
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return client.infer(name, [tensor], outputs=outputs, headers=headers, **kw)


@pytest.mark.parametrize("binary", [False, True])
def test_infer_matches_direct_triton(served: Api, tmp_path: Path, binary: bool) -> None:
    d = deploy_onnx(served, tmp_path)
    with _client(served) as proxy, _direct(served) as direct:
        through = _infer(proxy, d.model, binary=binary, key=d.consumer_key, request_id="r-1")
        expected = _infer(direct, d.triton_name, binary=binary, request_id="r-1")
        assert np.array_equal(through.as_numpy("y"), expected.as_numpy("y"))
        response = through.get_response()
        assert response["model_name"] == d.model
        assert response["model_version"] == str(d.version)
        assert response["id"] == "r-1"
        assert d.triton_name not in str(response)


def test_metadata_and_readiness_match_direct_triton(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    headers = {"Authorization": f"Bearer {d.consumer_key}"}
    with _client(served) as proxy, _direct(served) as direct:
        assert proxy.is_server_live()
        assert proxy.is_server_ready()
        assert proxy.is_model_ready(d.model, headers=headers)
        assert proxy.is_model_ready(d.model, model_version=str(d.version), headers=headers)
        ours = proxy.get_model_metadata(d.model, headers=headers)
        theirs = direct.get_model_metadata(d.triton_name)
        assert ours == {**theirs, "name": d.model, "versions": [str(d.version)]}
        config = proxy.get_model_config(d.model, headers=headers)
        direct_config = direct.get_model_config(d.triton_name)
        assert d.triton_name in json.dumps(direct_config["instance_group"])  # groups are named after it
        assert d.triton_name not in json.dumps(config)  # nowhere in what the tenant sees
        assert config == json.loads(json.dumps(direct_config).replace(d.triton_name, d.model))
        server = proxy.get_server_metadata(headers=headers)
        assert server["name"] == "triton-control-plane"
        assert not {"model_repository", "system_shared_memory", "statistics"} & set(server["extensions"])


def test_version_in_the_path_and_alias_header(served: Api, tmp_path: Path) -> None:
    d1 = deploy_onnx(served, tmp_path)
    d2 = deploy_onnx(served, tmp_path, tenant=d1.tenant, out_features=5, seed=1, alias="staging")
    with _client(served) as proxy:
        assert _infer(proxy, d1.model, binary=True, key=d1.consumer_key).as_numpy("y").shape == (2, 3)
        by_version = _infer(proxy, d1.model, binary=True, key=d1.consumer_key, model_version=str(d2.version))
        assert by_version.as_numpy("y").shape == (2, 5)
        tensor = triton_http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        staged = proxy.infer(
            d1.model,
            [tensor],
            headers={"Authorization": f"Bearer {d1.consumer_key}", "X-Model-Alias": "staging"},
        )
        assert staged.get_response()["model_version"] == str(d2.version)


def test_server_timing_and_metrics(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.reshape(-1).tolist()}]}
    response = served.client.post(
        f"/v2/models/{d.model}/infer", json=body, headers={"Authorization": f"Bearer {d.consumer_key}"}
    )
    assert response.status_code == 200
    timing = server_timing(response.headers["server-timing"])
    assert set(timing) == {"gateway", "triton"}
    assert timing["triton"] > 0 and timing["gateway"] >= 0
    metrics = served.client.get("/metrics", headers=served.headers()).text
    assert (
        f'cp_inference_requests_total{{model="{d.model}",protocol="http",status="200",tenant="{d.tenant}",'
        f'version="{d.version}"}} 1.0'
    ) in metrics
    assert (
        f'cp_inference_upstream_seconds_count{{model="{d.model}",protocol="http",tenant="{d.tenant}"}} 1.0'
        in metrics
    )


def test_simple_predict(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    response = served.client.post(
        f"/v1/predict/{d.model}",
        json={"inputs": {"x": X.tolist()}},
        headers={"Authorization": f"Bearer {d.consumer_key}"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["version"]) == (d.model, d.version)
    with _direct(served) as direct:
        expected = _infer(direct, d.triton_name, binary=True).as_numpy("y")
    np.testing.assert_allclose(np.asarray(body["outputs"]["y"], dtype=np.float32), expected, rtol=1e-6)
    bad = served.client.post(
        f"/v1/predict/{d.model}",
        json={"inputs": {"z": [1]}},
        headers={"Authorization": f"Bearer {d.consumer_key}"},
    )
    assert bad.status_code == 400
    assert bad.json()["error"] == "BadRequest"
    assert bad.json()["detail"] == "unknown input 'z'; the model's inputs are 'x'"
    versioned = served.client.post(  # the field was ignored: the alias' version answered, as if asked for
        f"/v1/predict/{d.model}",
        json={"inputs": {"x": X.tolist()}, "version": 2},
        headers={"Authorization": f"Bearer {d.consumer_key}"},
    )
    assert versioned.status_code == 400, versioned.text
    assert versioned.json()["detail"].startswith("unknown field 'version': /v1/predict takes only \"inputs\"")


def test_two_tenants_with_the_same_model_name_reach_their_own(served: Api, tmp_path: Path) -> None:
    a = deploy_onnx(served, tmp_path, seed=0)
    b = deploy_onnx(served, tmp_path, seed=7)
    with _client(served) as proxy, _direct(served) as direct:
        for mine in (a, b):
            got = _infer(proxy, "mlp", binary=True, key=mine.consumer_key).as_numpy("y")
            assert np.array_equal(got, _infer(direct, mine.triton_name, binary=True).as_numpy("y"))
        assert not np.array_equal(
            _infer(proxy, "mlp", binary=True, key=a.consumer_key).as_numpy("y"),
            _infer(proxy, "mlp", binary=True, key=b.consumer_key).as_numpy("y"),
        )


def _deployed_other(served: Api, tmp_path: Path) -> tuple[Deployed, Deployed]:
    mine = deploy_onnx(served, tmp_path)
    other = deploy_onnx(served, tmp_path, model="secret")
    return mine, other


def test_keys_last_used_is_recorded_without_a_write_per_request(served: Api, tmp_path: Path) -> None:
    d = deploy_onnx(served, tmp_path)
    headers = {"Authorization": f"Bearer {d.consumer_key}"}
    body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": X.reshape(-1).tolist()}]}
    prefix = d.consumer_key.split("_")[1]

    def last_used() -> str | None:
        keys = served.client.get(f"/v1/tenants/{d.tenant}/keys", headers=served.headers()).json()
        return next(k["last_used_at"] for k in keys if k["prefix"] == prefix)

    for _ in range(5):
        assert (
            served.client.post(f"/v2/models/{d.model}/infer", json=body, headers=headers).status_code == 200
        )
    assert last_used() is None  # nothing written on the request path
    served.state.key_usage.flush()  # what the background thread does every 30 s
    assert last_used() is not None


def test_large_binary_tensors_round_trip_through_the_proxy(served: Api, tmp_path: Path) -> None:
    """1 MiB each way: big bodies are forwarded and answered with vectored writes, byte for byte."""
    d = deploy_slow_python(served, tmp_path, seconds=0)
    data = np.random.default_rng(7).standard_normal(256 * 1024).astype(np.float32)
    tensor = triton_http.InferInput("INPUT0", [data.size], "FP32")
    tensor.set_data_from_numpy(data, binary_data=True)
    outputs = [triton_http.InferRequestedOutput("OUTPUT0", binary_data=True)]
    headers = {"Authorization": f"Bearer {d.consumer_key}"}
    with _client(served) as proxy:
        result = proxy.infer(d.model, [tensor], outputs=outputs, headers=headers)
    assert np.array_equal(result.as_numpy("OUTPUT0"), data)
    assert result.get_response()["model_name"] == d.model


def test_a_clients_request_id_is_echoed_on_every_inference_answer(served: Api, tmp_path: Path) -> None:
    """On the fast path, the ASGI path (Expect: 100-continue), /v1/predict, metadata and errors alike; an
    unsafe one is not echoed (the management API makes one of its own instead)."""
    d = deploy_onnx(served, tmp_path)
    body = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": X[0].tolist()}]}
    key = {"Authorization": f"Bearer {d.consumer_key}"}
    infer = f"/v2/models/{d.model}/infer"
    for headers in ({}, {"Expect": "100-continue"}):
        answer = served.client.post(
            infer, json=body, headers={**key, **headers, "X-Request-ID": "job-42.a:b"}
        )
        assert answer.status_code == 200 and answer.headers["x-request-id"] == "job-42.a:b", headers
    predict = served.client.post(
        f"/v1/predict/{d.model}",
        json={"inputs": {"x": X[:1].tolist()}},
        headers={**key, "X-Request-ID": "p1"},
    )
    assert predict.status_code == 200 and predict.headers["x-request-id"] == "p1"
    metadata = served.client.get(f"/v2/models/{d.model}", headers={**key, "X-Request-ID": "m1"})
    assert metadata.status_code == 200 and metadata.headers["x-request-id"] == "m1"
    missing = served.client.post("/v2/models/nope/infer", json=body, headers={**key, "X-Request-ID": "e1"})
    assert missing.status_code == 404 and missing.headers["x-request-id"] == "e1"
    for unsafe in ("a b", "x" * 65, "<script>"):
        answer = served.client.post(infer, json=body, headers={**key, "X-Request-ID": unsafe})
        assert answer.status_code == 200 and "x-request-id" not in answer.headers, unsafe
    assert "x-request-id" not in served.client.post(infer, json=body, headers=key).headers
