"""`/v1` listings are paged by key: `limit` and `after` in, `Link: rel="next"` out, nothing twice or lost."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from control_plane.db.models import AuditEvent
from control_plane.db.session import transaction
from tests.support.api import Api
from tests.support.builders import unique_name
from tests.support.deploy import deploy_onnx


def walk(api: Api, url: str, *, key: str | None = None) -> tuple[list[Any], list[str]]:
    """Every item of a listing, following its links; and the links followed."""
    items: list[Any] = []
    links: list[str] = []
    following: str | None = url
    while following is not None:
        response = api.client.get(following, headers=api.headers(key))
        assert response.status_code == 200, response.text
        items.extend(response.json())
        link = response.links.get("next", {}).get("url")
        following = None
        if link is not None:
            assert link.startswith("?"), link  # the query alone: the same listing, behind any proxy prefix
            links.append(link)
            following = url.split("?")[0] + link
    return items, links


def test_models_come_in_pages_by_name_and_the_first_page_is_the_default_listing(api: Api) -> None:
    tenant = api.tenant()
    names = sorted(f"m{i:02d}" for i in range(7))
    for name in reversed(names):
        assert api.create_model(tenant, name=name, format="onnx").status_code == 201

    items, links = walk(api, f"/v1/tenants/{tenant}/models?limit=3")

    assert [m["name"] for m in items] == names
    assert links == ["?after=m02&limit=3", "?after=m05&limit=3"]
    whole = api.client.get(f"/v1/tenants/{tenant}/models", headers=api.headers())
    assert [m["name"] for m in whole.json()] == names and "link" not in whole.headers
    exact = api.client.get(f"/v1/tenants/{tenant}/models?limit=7", headers=api.headers())
    assert len(exact.json()) == 7 and "link" not in exact.headers  # no empty last page


def test_a_page_neither_repeats_nor_skips_what_changed_before_it(api: Api) -> None:
    tenant = api.tenant()
    for name in ("b", "d", "f", "h"):
        assert api.create_model(tenant, name=name, format="onnx").status_code == 201
    first = api.client.get(f"/v1/tenants/{tenant}/models?limit=2", headers=api.headers())
    assert [m["name"] for m in first.json()] == ["b", "d"]

    # Meanwhile: a model is added before the cursor, one after it, and one of the next page is deleted.
    for name in ("a", "e"):
        assert api.create_model(tenant, name=name, format="onnx").status_code == 201
    assert api.client.delete(f"/v1/tenants/{tenant}/models/f", headers=api.headers()).status_code == 204
    rest, _ = walk(api, f"/v1/tenants/{tenant}/models" + first.links["next"]["url"])

    assert [m["name"] for m in rest] == ["e", "h"]


def test_tenants_keys_and_audit_page_through_everything_once(api: Api) -> None:
    tenant = api.tenant()
    ids = [
        api.client.post(
            f"/v1/tenants/{tenant}/keys", json={"role": "consumer"}, headers=api.headers()
        ).json()["id"]
        for _ in range(5)
    ]
    keys, links = walk(api, f"/v1/tenants/{tenant}/keys?limit=2")
    assert [k["id"] for k in keys] == ids and len(links) == 2

    tenants, _ = walk(api, "/v1/tenants?limit=50")
    names = [t["name"] for t in tenants]
    whole = api.client.get("/v1/tenants?limit=1000", headers=api.headers()).json()
    assert names == [t["name"] for t in whole] and tenant in names  # in the database's collation

    events, links = walk(api, f"/v1/audit?tenant={tenant}&limit=2")
    assert [e["action"] for e in events] == ["key.create"] * 5 + ["tenant.create"]
    assert [e["id"] for e in events] == sorted((e["id"] for e in events), reverse=True)
    assert all(f"tenant={tenant}" in link for link in links), links  # the filter goes on to every page

    publisher = api.key(tenant, "publisher")
    own, _ = walk(api, "/v1/tenants?limit=1", key=publisher)
    assert [t["name"] for t in own] == [tenant]  # a tenant's key pages through its own tenant only


def test_versions_and_alias_history_page(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    for seed in range(3):
        deploy_onnx(api, tmp_path, tenant=tenant, seed=seed)  # v1, v2, v3, each promoted
    versions, links = walk(api, f"/v1/tenants/{tenant}/models/mlp/versions?limit=2")
    assert [v["version"] for v in versions] == [1, 2, 3]
    assert links == ["?after=2&limit=2"]

    for number in (1, 2):
        moved = api.client.put(
            f"/v1/tenants/{tenant}/models/mlp/aliases/production",
            json={"version": number},
            headers=api.headers(),
        )
        assert moved.status_code == 200, moved.text
    history, links = walk(api, f"/v1/tenants/{tenant}/models/mlp/aliases/production/history?limit=2")
    assert [h["to_version"] for h in history] == [2, 1, 3, 2, 1]
    assert len(links) == 2


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=",
        "after=" + "n" * 64,
        "after=a%00b",
        "after=B",
        "after=a/b",
    ],
)
def test_a_bad_page_is_422_in_the_callers_terms(api: Api, query: str) -> None:
    tenant = api.tenant()
    response = api.client.get(f"/v1/tenants/{tenant}/models?{query}", headers=api.headers())
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "InvalidRequest"
    assert ("limit" if "limit" in query else "after") in response.json()["detail"]


@pytest.mark.parametrize("query", ["after=-1", "after=x", f"after={2**63}"])
def test_a_bad_numeric_cursor_is_422(api: Api, query: str) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    for url in (f"/v1/tenants/{tenant}/models/m/versions", f"/v1/tenants/{tenant}/keys", "/v1/audit"):
        response = api.client.get(f"{url}?{query}", headers=api.headers())
        assert response.status_code == 422, (url, response.text)
    past = api.client.get(f"/v1/tenants/{tenant}/models/m/versions?after={2**31}", headers=api.headers())
    assert past.status_code == 422 and "after" in past.json()["detail"]  # versions are an INTEGER column


def test_a_cursor_of_nothing_is_an_empty_page_not_an_error(api: Api) -> None:
    tenant = api.tenant()
    model = unique_name("m")
    assert api.create_model(tenant, name=model, format="onnx").status_code == 201
    for url in (
        f"/v1/tenants/{tenant}/models?after=zzz",
        f"/v1/tenants/{tenant}/keys?after={2**63 - 1}",
        f"/v1/tenants/{tenant}/models/{model}/versions?after={2**31 - 1}",  # the INTEGER column's last
    ):
        response = api.client.get(url, headers=api.headers())
        assert response.status_code == 200 and response.json() == [], response.text
    gone = api.client.get(f"/v1/audit?after={2**63 - 1}", headers=api.headers())
    assert gone.status_code == 200 and gone.json() == []


def test_the_openapi_document_lists_the_page_parameters() -> None:
    from control_plane.app import create_app
    from control_plane.settings import Settings

    document = create_app(Settings(admin_token="x")).openapi()
    for route in (
        "/v1/tenants",
        "/v1/tenants/{tenant}/models",
        "/v1/tenants/{tenant}/models/{model}/versions",
        "/v1/tenants/{tenant}/keys",
        "/v1/tenants/{tenant}/models/{model}/aliases/{alias}/history",
        "/v1/audit",
    ):
        names = {p["name"] for p in document["paths"][route]["get"]["parameters"]}
        assert {"limit", "after"} <= names, route


def test_audit_events_of_one_instant_page_by_id(api: Api) -> None:
    tenant = api.tenant()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction(api.state.session_factory) as session:
        for n in range(5):
            session.add(AuditEvent(actor="t", action=f"tie.{n}", target="t", tenant=tenant, created_at=at))

    events, links = walk(api, f"/v1/audit?tenant={tenant}&limit=1")

    assert [e["action"] for e in events] == ["tenant.create"] + [f"tie.{n}" for n in reversed(range(5))]
    assert len(links) == 5


def test_a_page_describes_each_model_as_its_own_get_does(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    deploy_onnx(api, tmp_path, tenant=tenant, model="served")  # a version, signature and alias of its own
    deploy_onnx(api, tmp_path, tenant=tenant, model="served", seed=1, alias="staging")
    declared = {
        "inputs": [{"name": "a", "datatype": "INT64", "shape": [-1, 7]}],
        "outputs": [{"name": "b", "datatype": "FP32", "shape": [-1, 2]}],
    }
    for name, spec in (
        ("plain", {}),
        ("same-as-plain", {}),
        ("unbatched", {"max_batch_size": 0}),
        ("declared", declared),
        ("wide", {"max_batch_size": 32, "instance_group": {"count": 2}}),
    ):
        assert api.create_model(tenant, name=name, format="onnx", **spec).status_code == 201, name

    listed, _ = walk(api, f"/v1/tenants/{tenant}/models?limit=2")

    one_by_one = [
        api.client.get(f"/v1/tenants/{tenant}/models/{m['name']}", headers=api.headers()).json()
        for m in listed
    ]
    assert listed == one_by_one
    served = next(m for m in listed if m["name"] == "served")
    assert served["aliases"] == {"production": 1, "staging": 2} and len(served["versions"]) == 2
    assert len({str(m["serving"]) for m in listed}) >= 3
