"""Deleting an alias, against the real registry and Triton: routing stops (here and on another replica),
the versions it held can be deleted and start their keep-warm period, canary and shadow go with it,
protected aliases are for admins, other tenants see 404, and the audit trail keeps what it was."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}


def _url(d: Deployed, alias: str) -> str:
    return f"/v1/tenants/{d.tenant}/models/{d.model}/aliases/{alias}"


def _infer(api: Api, d: Deployed, alias: str) -> Any:
    headers = {**api.headers(d.consumer_key), "X-Model-Alias": alias}
    return api.client.post(f"/v2/models/{d.model}/infer", json=BODY, headers=headers)


def _audited(api: Api, d: Deployed) -> list[dict[str, Any]]:
    params = {"tenant": d.tenant, "model": d.model, "action": "alias.delete"}
    answer = api.client.get("/v1/audit", params=params, headers=api.headers())
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def _state(api: Api, d: Deployed, number: int) -> str:
    return str(api.version(d.tenant, d.model, number)["state"])


def test_a_deleted_alias_routes_nothing_and_the_version_it_held_can_be_deleted(
    api: Api, tmp_path: Path
) -> None:
    v1 = deploy_onnx(api, tmp_path)  # production -> 1
    v2 = deploy_onnx(api, tmp_path, tenant=v1.tenant, out_features=5, seed=1, alias="staging")
    assert _infer(api, v2, "staging").json()["model_version"] == "2"
    held = api.client.delete(f"/v1/tenants/{v1.tenant}/models/{v1.model}/versions/2", headers=api.headers())
    assert held.status_code == 409 and "staging" in held.json()["detail"], held.text

    gone = api.client.delete(_url(v2, "staging"), headers=api.headers(v2.publisher_key))
    assert gone.status_code == 204, gone.text
    assert gone.content == b""
    answer = _infer(api, v2, "staging")
    assert answer.status_code == 404, answer.text
    assert "no alias 'staging'" in answer.json()["error"], answer.text
    assert _infer(api, v1, "production").status_code == 200  # the model's other alias is untouched
    model = api.client.get(f"/v1/tenants/{v1.tenant}/models/{v1.model}", headers=api.headers()).json()
    assert model["aliases"] == {"production": 1}
    for path in ("", "/history", "/traffic"):
        missing = api.client.get(_url(v2, "staging") + path, headers=api.headers())
        assert missing.status_code in (404, 405), (path, missing.text)
    assert api.client.get(_url(v2, "staging") + "/history", headers=api.headers()).status_code == 404
    again = api.client.delete(_url(v2, "staging"), headers=api.headers())
    assert again.status_code == 404
    assert again.json()["detail"] == f"alias 'staging' not found on model '{v1.model}'"
    deleted = api.client.delete(
        f"/v1/tenants/{v1.tenant}/models/{v1.model}/versions/2", headers=api.headers()
    )
    assert deleted.status_code == 200, deleted.text

    [event] = _audited(api, v2)
    assert event["target"] == f"{v1.tenant}/{v1.model}@staging"
    assert event["before"] == {"version": 2, "routes": [], "shadow": None}
    assert event["actor"].startswith("key:") and event["outcome"] == "success"


def test_a_recreated_alias_starts_with_no_history_and_no_rollback(api: Api, tmp_path: Path) -> None:
    v1 = deploy_onnx(api, tmp_path)
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=1)  # production: 1 -> 2
    assert api.client.delete(_url(v1, "production"), headers=api.headers()).status_code == 204
    moved = api.client.put(_url(v1, "production"), json={"version": 2}, headers=api.headers())
    assert moved.status_code == 200, moved.text
    assert moved.json()["previous_version"] is None
    history = api.client.get(_url(v1, "production") + "/history", headers=api.headers()).json()
    assert [(h["from_version"], h["to_version"]) for h in history] == [(None, 2)]
    rolled = api.client.post(_url(v1, "production") + "/rollback", headers=api.headers())
    assert rolled.status_code == 409 and "no previous version" in rolled.json()["detail"], rolled.text


def test_protected_aliases_are_deleted_by_admins_only_and_other_tenants_see_404(
    api: Api, tmp_path: Path
) -> None:
    mine = deploy_onnx(api, tmp_path)
    theirs = deploy_onnx(api, tmp_path)  # another tenant
    denied = api.client.delete(_url(mine, "production"), headers=api.headers(mine.publisher_key))
    assert denied.status_code == 403
    assert denied.json()["detail"] == "alias 'production' is protected: only admins may delete it"
    reader = api.client.delete(_url(mine, "production"), headers=api.headers(mine.consumer_key))
    assert reader.status_code == 403
    across = api.client.delete(_url(mine, "production"), headers=api.headers(theirs.publisher_key))
    assert across.status_code == 404
    assert across.json()["detail"] == f"tenant '{mine.tenant}' not found"
    bad = api.client.delete(_url(mine, "Prod..uction"), headers=api.headers())
    assert bad.status_code == 422 and "invalid alias name" in bad.json()["detail"], bad.text
    assert _infer(api, mine, "production").status_code == 200  # none of those removed it
    assert api.client.delete(_url(mine, "production"), headers=api.headers()).status_code == 204
    assert _infer(api, mine, "production").status_code == 404
    assert _infer(api, theirs, "production").status_code == 200


def test_deleting_an_alias_removes_its_canary_and_shadow_and_releases_their_versions(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_api(keep_warm_s=1.0, janitor_interval_s=0.2)
    v1 = deploy_onnx(api, tmp_path)  # production -> 1
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=1, alias="canary")  # 2
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=2, alias="shadowed")  # 3
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=3, alias="beta")  # 4, behind `beta` alone
    split = {
        "routes": [{"version": 4, "weight": 70}, {"version": 2, "weight": 30}],
        "shadow": {"version": 3, "percent": 100},
    }
    assert api.client.put(_url(v1, "beta") + "/traffic", json=split, headers=api.headers()).status_code == 200
    for alias in ("canary", "shadowed"):  # versions 2 and 3 are now named by `beta`'s routes alone
        assert api.client.delete(_url(v1, alias), headers=api.headers()).status_code == 204

    assert api.client.delete(_url(v1, "beta"), headers=api.headers()).status_code == 204
    [event, *_] = _audited(api, v1)
    assert event["target"].endswith("@beta")
    assert event["before"] == {
        "version": 4,
        "routes": [{"version": 2, "weight": 30}, {"version": 4, "weight": 70}],
        "shadow": {"version": 3, "percent": 100},
    }
    deadline = time.monotonic() + 20
    while {_state(api, v1, n) for n in (2, 3, 4)} != {"unloaded"}:
        assert time.monotonic() < deadline, [_state(api, v1, n) for n in (1, 2, 3, 4)]
        time.sleep(0.2)
    assert _state(api, v1, 1) == "ready"  # still named by production
    for number in (2, 3, 4):  # nothing references them: each can go
        deleted = api.client.delete(
            f"/v1/tenants/{v1.tenant}/models/{v1.model}/versions/{number}", headers=api.headers()
        )
        assert deleted.status_code == 200, deleted.text
    again = api.client.put(_url(v1, "beta"), json={"version": 1}, headers=api.headers())
    assert again.status_code == 200, again.text
    traffic = api.client.get(_url(v1, "beta") + "/traffic", headers=api.headers()).json()
    assert traffic["routes"] == [] and traffic["shadow"] is None and traffic["shadow_stats"] is None


def test_another_replica_stops_routing_a_deleted_alias(make_api: Callable[..., Api], tmp_path: Path) -> None:
    here = make_api()
    there = make_api(s3_bucket=here.settings.s3_bucket)  # a second replica on the same Postgres
    d = deploy_onnx(here, tmp_path, alias="staging")
    deadline = time.monotonic() + 10
    while _infer(there, d, "staging").status_code != 200:  # its table has the alias (NOTIFY or refresh)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert here.client.delete(_url(d, "staging"), headers=here.headers()).status_code == 204
    deadline = time.monotonic() + 10
    while (answer := _infer(there, d, "staging")).status_code != 404:
        assert answer.status_code == 200, answer.text
        assert time.monotonic() < deadline, "the other replica still routes the deleted alias"
        time.sleep(0.05)
