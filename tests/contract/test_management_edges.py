"""Management requests the fuzzer found answered 500 or undocumented: now 422 with the error body."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.api import Api
from tests.support.deploy import deploy_onnx

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


@pytest.mark.parametrize("name", ["\x00", "a\x00b", "..", "x" * 300, "a b"])
def test_an_instance_name_no_instance_can_have_is_404_not_500(api: Api, name: str) -> None:
    """A NUL byte reached Postgres, which refused it: 500, and uvicorn closed the connection."""
    quoted = "".join(f"%{b:02X}" if b < 0x21 else chr(b) for b in name.encode())
    budget = {"memory_budget_bytes": 2**30}
    for response in (
        api.client.get(f"/v1/instances/{quoted}", headers=api.headers()),
        api.client.put(f"/v1/instances/{quoted}", json=budget, headers=api.headers()),
        api.client.delete(f"/v1/instances/{quoted}", headers=api.headers()),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "NotFound"


@pytest.mark.parametrize("alias", ["\x00", "PRODUCTION", "../../etc", "prod uction", "a--b", "\U0001f600"])
def test_a_pinned_alias_no_alias_can_be_named_is_422(api: Api, alias: str) -> None:
    """Accepted before (the NUL byte as a 500): a pin that can never match an alias does nothing."""
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    placement = f"/v1/tenants/{tenant}/models/m/placement"
    _invalid(
        api.client.put(placement, json={"pinned_aliases": [alias]}, headers=api.headers()), "pinned_aliases"
    )
    pinned = api.client.put(
        placement, json={"pinned_aliases": ["production", "canary_2"]}, headers=api.headers()
    )
    assert pinned.status_code == 200 and pinned.json()["pinned_aliases"] == ["canary_2", "production"]


def test_a_value_the_database_refuses_is_422_not_500(api: Api) -> None:
    """What no schema catches (Postgres refuses a NUL character in text) never answers 500: the key's
    description reached the database."""
    tenant = api.tenant()
    keys = f"/v1/tenants/{tenant}/keys"
    created = api.client.post(keys, json={"role": "consumer", "description": "a\x00b"}, headers=api.headers())
    _invalid(created, "cannot be stored")
    listed = api.client.get(keys, headers=api.headers())
    assert listed.status_code == 200 and listed.json() == [], "nothing half-written"
    follow = api.client.post(keys, json={"role": "consumer", "description": "ab"}, headers=api.headers())
    assert follow.status_code == 201, "the connection and the session are fine afterwards"


def test_a_body_without_a_key_is_refused_before_it_is_read() -> None:
    """FastAPI parses a JSON body on the event loop before the dependency that checks the key: 64 MB of
    JSON from a client with no key at all took 1.8 s. The middleware refuses it unread."""
    import asyncio

    from control_plane.app import UPLOAD_PATH
    from control_plane.middleware import BodyLimitMiddleware

    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])

    async def call(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
        reads = 0
        sent: list[Any] = []

        async def receive() -> Any:
            nonlocal reads
            reads += 1
            return {"type": "http.request", "body": b"[" + b"0," * 1000 + b"0]", "more_body": False}

        async def send(message: Any) -> None:
            sent.append(message)

        middleware = BodyLimitMiddleware(
            app, default_limit=1 << 26, api_limit=1 << 20, upload_limit=1 << 31, upload_path=UPLOAD_PATH
        )
        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        await middleware(scope, receive, send)
        status = next((m["status"] for m in sent if m["type"] == "http.response.start"), 0)
        return status, reads

    for method in ("POST", "PUT", "PATCH"):
        for headers in ([], [(b"authorization", b"Basic eDp5")], [(b"authorization", b"Bearer ")]):
            assert asyncio.run(call(method, "/v1/tenants", headers)) == (401, 0)
    assert reached == []
    asyncio.run(call("POST", "/v1/tenants", [(b"authorization", b"Bearer anything")]))  # the key: later
    asyncio.run(call("GET", "/v1/tenants", []))  # no body: the route answers 401 itself
    assert reached == ["/v1/tenants", "/v1/tenants"]


def test_a_management_body_over_its_limit_is_413(api: Api) -> None:
    tenant = api.tenant()
    body = b'{"name": "m", "format": "onnx", "pad": "' + b"x" * (1 << 20) + b'"}'
    response = api.client.post(
        f"/v1/tenants/{tenant}/models",
        content=body,
        headers={**api.headers(), "content-type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert "over the limit of 1048576 bytes" in response.json()["detail"]
    response = api.client.post(
        f"/v1/tenants/{tenant}/models", content=body[:2000] + b'"}', headers=api.headers()
    )
    assert response.status_code != 413


def test_a_management_query_string_over_its_limit_is_414(api: Api) -> None:
    """Query strings are parsed before the key is checked: 64 KB of them took 21-25 ms."""
    response = api.client.get("/v1/tenants?" + "a&" * 3000)
    assert response.status_code == 414, response.text
    assert response.json()["error"] == "URITooLong"
    assert api.client.get("/v1/tenants?limit=5", headers=api.headers()).status_code == 200


def test_a_chunked_management_body_over_its_limit_is_413_not_a_parse_error(
    make_served: Callable[..., Api],
) -> None:
    """Without a Content-Length the limit is found while the body streams in; the client must still hear 413
    (FastAPI's JSON reader turned the refusal into a 400 'error parsing the body', answered as 422)."""
    served = make_served(max_api_body_bytes=1000, max_upload_bytes=2048)
    tenant = served.tenant()
    chunks = (b"x" * 600 for _ in range(3))
    answer = served.client.post(
        f"/v1/tenants/{tenant}/models",
        content=chunks,
        headers={**served.headers(), "content-type": "application/json"},
    )
    assert answer.status_code == 413, answer.text
    assert answer.json() == {
        "error": "PayloadTooLarge",
        "detail": "request body over the limit of 1000 bytes",
    }
    assert served.client.get(f"/v1/tenants/{tenant}/models", headers=served.headers()).status_code == 200


def test_tenants_keys_see_no_storage_address_or_internal_name_of_their_versions(
    api: Api, tmp_path: Path
) -> None:
    """A publisher's GET of its version showed `artifact_uri` (a server folder or bucket) and `triton_name`
    (the version's name in Triton, also in its config): the platform's own, which the contract says never
    reach tenants. Admins still see them."""
    d = deploy_onnx(api, tmp_path)
    url = f"/v1/tenants/{d.tenant}/models/{d.model}/versions"
    mine = api.headers(d.publisher_key)
    uploaded = api.upload(d.tenant, d.model, d.artifact, key=d.publisher_key).json()
    one = api.client.get(f"{url}/1", headers=mine).json()
    listed = api.client.get(url, headers=mine).json()
    loaded = api.client.post(f"{url}/1/load", headers=mine).json()
    for seen in (uploaded, one, *listed, loaded):
        assert seen["artifact_uri"] is None and seen["triton_name"] is None, seen
        assert d.triton_name not in str(seen) and "sha256/" not in str(seen)
    assert 'name: "mlp"' in one["config"]
    admin = api.client.get(f"{url}/1", headers=api.headers()).json()
    assert admin["triton_name"] == d.triton_name and admin["artifact_uri"]
    assert f'name: "{d.triton_name}"' in admin["config"]
