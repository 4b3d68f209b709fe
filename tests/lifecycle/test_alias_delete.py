"""Deleting an alias, against the real registry and Triton: routing stops (here and on another replica),
the versions it held can be deleted and start their keep-warm period, canary and shadow go with it,
protected aliases are for admins, other tenants see 404, and the audit trail keeps what it was."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.lifecycle import service, traffic
from control_plane.registry import repository
from control_plane.registry.aliases import check_may_move
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.registries import on_registry

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
    assert event["before"] == {
        "alias": "staging",
        "version": 2,
        "routes": [],
        "shadow": None,
        "pinned": False,
    }
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


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_deleting_an_alias_removes_its_canary_and_shadow_and_releases_their_versions(
    make_api: Callable[..., Api], tmp_path: Path, registry: str
) -> None:
    """On SQLite too: its keep-warm janitor compared a zoneless `released_at` with an aware cutoff and
    failed every sweep, so no released version was ever unloaded there."""
    api = on_registry(make_api, tmp_path, registry, keep_warm_s=1.0, janitor_interval_s=0.2)
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
        "alias": "beta",
        "version": 4,
        "routes": [{"version": 2, "weight": 30}, {"version": 4, "weight": 70}],
        "shadow": {"version": 3, "percent": 100},
        "pinned": False,
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


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_two_deletes_at_once_give_one_204_one_404_and_one_audit_event(
    make_api: Callable[..., Api], tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite ignores the row locks: both requests read the alias, and both answered 204 and audited it."""
    api = on_registry(make_api, tmp_path, registry)
    d = deploy_onnx(api, tmp_path, alias="staging")
    real, both_read = repository.delete_alias, threading.Barrier(2, timeout=3)

    def after_both_read(session: Any, *, alias_id: int) -> set[int] | None:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()  # Postgres: the second waits on the model's lock, so this times out
        return real(session, alias_id=alias_id)

    monkeypatch.setattr(repository, "delete_alias", after_both_read)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: api.client.delete(_url(d, "staging"), headers=api.headers()), "ab"))
    assert sorted(a.status_code for a in answers) == [204, 404], [a.text for a in answers]
    assert len(_audited(api, d)) == 1


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
@pytest.mark.parametrize("move", ["promote", "rollback", "traffic"])
def test_a_move_racing_a_delete_of_its_alias_is_done_first_never_500(
    make_api: Callable[..., Api], tmp_path: Path, registry: str, move: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The move pauses right after reading the alias (locked); a delete of the alias comes meanwhile and
    waits for the move: for the model's lock on Postgres, for SQLite's write lock there (the move takes it
    before reading). On SQLite the move found the alias gone at its write and answered 500 (StaleDataError;
    for traffic, a foreign key failure), and, once that was caught, 404."""
    api = on_registry(make_api, tmp_path, registry)
    v1 = deploy_onnx(api, tmp_path, alias="staging")
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=1, alias="staging")  # staging: 1 -> 2
    real_get = repository.get_alias
    mover: dict[str, int] = {}
    paused, deleted = threading.Event(), threading.Event()

    def marked(**kwargs: Any) -> None:  # the mover's thread is the one that checks a move, not a delete
        if kwargs.get("verb", "move") == "move":
            mover["thread"] = threading.get_ident()
        check_may_move(**kwargs)

    def get_then_pause(session: Any, *, model_id: int, name: str, lock: bool = False) -> Any:
        found = real_get(session, model_id=model_id, name=name, lock=lock)
        if lock and threading.get_ident() == mover.get("thread") and not paused.is_set():
            paused.set()
            deleted.wait(3)  # Postgres: the delete waits for this move's lock, so this times out
        return found

    monkeypatch.setattr(repository, "get_alias", get_then_pause)
    monkeypatch.setattr(service, "check_may_move", marked)
    monkeypatch.setattr(traffic, "check_may_move", marked)

    def do_move() -> httpx.Response:
        url, headers = _url(v1, "staging"), api.headers()
        if move == "promote":
            return api.client.put(url, json={"version": 1}, headers=headers)
        if move == "rollback":
            return api.client.post(url + "/rollback", headers=headers)
        split = {"routes": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}
        return api.client.put(url + "/traffic", json=split, headers=headers)

    with ThreadPoolExecutor(1) as pool:
        moving = pool.submit(do_move)
        assert paused.wait(30)
        gone = api.client.delete(_url(v1, "staging"), headers=api.headers())
        deleted.set()
        moved = moving.result()
    assert gone.status_code == 204, gone.text
    assert moved.status_code == 200, moved.text  # done first; then the delete
    model = api.client.get(f"/v1/tenants/{v1.tenant}/models/{v1.model}", headers=api.headers()).json()
    assert "staging" not in model["aliases"]


def test_deleting_an_alias_of_a_model_deleted_meanwhile_is_404(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model was deleted (kept, marked) between the request's read of it and its lock: the alias'
    delete went ahead, answered 204 and was audited after the model's delete."""
    d = deploy_onnx(api, tmp_path, alias="staging")
    real_lock, paused, go = repository.lock_model, threading.Event(), threading.Event()

    def pause_then_lock(session: Any, model: Any) -> None:
        if not paused.is_set():
            paused.set()
            go.wait(10)
        real_lock(session, model)

    monkeypatch.setattr(repository, "lock_model", pause_then_lock)
    with ThreadPoolExecutor(1) as pool:
        deleting = pool.submit(lambda: api.client.delete(_url(d, "staging"), headers=api.headers()))
        assert paused.wait(30)
        model_url = f"/v1/tenants/{d.tenant}/models/{d.model}"
        assert api.client.delete(model_url, headers=api.headers()).status_code == 204
        go.set()
        answer = deleting.result()
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"] == f"model '{d.model}' not found in tenant '{d.tenant}'"
    assert _audited(api, d) == []


def test_a_pin_on_the_alias_stays_on_the_model_and_the_event_says_it_was_pinned(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """Pins name aliases (one may be pinned before it exists): the admin's pin stays, pinning nothing
    until an alias of that name is created again; the version the deleted alias held is released."""
    api = make_api(keep_warm_s=1.0, janitor_interval_s=0.2)
    v1 = deploy_onnx(api, tmp_path)
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=1, alias="staging")  # 2
    placement = f"/v1/tenants/{v1.tenant}/models/{v1.model}/placement"
    pinned = api.client.put(placement, json={"pinned_aliases": ["staging"]}, headers=api.headers())
    assert pinned.status_code == 200, pinned.text
    assert api.client.delete(_url(v1, "staging"), headers=api.headers(v1.publisher_key)).status_code == 204
    [event] = _audited(api, v1)
    assert event["before"] == {"alias": "staging", "version": 2, "routes": [], "shadow": None, "pinned": True}
    assert api.client.get(placement, headers=api.headers()).json()["pinned_aliases"] == ["staging"]
    deadline = time.monotonic() + 20
    while _state(api, v1, 2) != "unloaded":
        assert time.monotonic() < deadline, _state(api, v1, 2)
        time.sleep(0.2)
