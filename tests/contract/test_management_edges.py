"""Management requests the fuzzer found answered 500 or undocumented: now 422 with the error body."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.api import Api

TENSOR = {"name": "a", "datatype": "FP32", "shape": [-1, 4]}


def _invalid(response: Any, *words: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "InvalidRequest"
    assert all(word in body["detail"] for word in words), body


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"inputs": [], "outputs": []}, ("at least 1 item",)),
        (
            {"inputs": [TENSOR, TENSOR], "outputs": [{**TENSOR, "name": "b"}]},
            ("input name 'a'", "more than once"),
        ),
    ],
)
def test_a_declared_signature_that_is_not_one_is_422(
    api: Api, spec: dict[str, Any], words: tuple[str]
) -> None:
    tenant = api.tenant()
    _invalid(api.create_model(tenant, name="m", format="onnx", **spec), *words)


def test_numbers_past_the_database_columns_are_422(api: Api) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    model = f"/v1/tenants/{tenant}/models/m"
    huge = 2**35
    _invalid(api.client.put(f"{model}/aliases/production", json={"version": huge}, headers=api.headers()))
    _invalid(
        api.client.post(
            f"{model}/aliases/production/rollback", json={"to_version": huge}, headers=api.headers()
        )
    )
    traffic = {"routes": [{"version": huge, "weight": 100}]}
    _invalid(api.client.put(f"{model}/aliases/production/traffic", json=traffic, headers=api.headers()))
    _invalid(api.client.get(f"{model}/versions/{huge}", headers=api.headers()))
    _invalid(api.client.delete(f"{model}/versions/{huge}", headers=api.headers()))
    _invalid(api.client.delete(f"/v1/tenants/{tenant}/keys/{2**70}", headers=api.headers()))


def test_a_malformed_multipart_upload_is_422(api: Api) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    response = api.client.post(
        f"/v1/tenants/{tenant}/models/m/versions",
        content=b"--xyz\r\n[[1, 2]]--xyz--\r\n",
        headers={**api.headers(), "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    _invalid(response, "multipart")


@pytest.mark.parametrize("not_a_count", [True, "8", 2.5])
def test_counts_given_as_something_else_are_422(api: Api, not_a_count: Any) -> None:
    """JSON true or "8" is not silently read as 1 or 8 (a budget of 1 byte evicts everything)."""
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    model = f"/v1/tenants/{tenant}/models/m"
    _invalid(api.create_model(tenant, name="n", format="onnx", max_batch_size=not_a_count), "max_batch_size")
    _invalid(api.client.patch(model, json={"max_batch_size": not_a_count}, headers=api.headers()))
    traffic = {"routes": [{"version": 1, "weight": not_a_count}]}
    _invalid(api.client.put(f"{model}/aliases/production/traffic", json=traffic, headers=api.headers()))
    placement = {"replicas": not_a_count}
    _invalid(api.client.put(f"{model}/placement", json=placement, headers=api.headers()), "replicas")
    budget = {"memory_budget_bytes": not_a_count}
    _invalid(api.client.put("/v1/instances/any", json=budget, headers=api.headers()), "memory_budget_bytes")
