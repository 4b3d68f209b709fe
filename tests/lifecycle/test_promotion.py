"""Promote, roll back, keep-warm, history and audit against the real registry and Triton."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from control_plane.db.models import ModelVersion
from control_plane.db.session import transaction
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.triton_models import MODEL

BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.5, -1.0, 2.0, 0.25]}]}


def _alias_url(d: Deployed, alias: str = "production") -> str:
    return f"/v1/tenants/{d.tenant}/models/{d.model}/aliases/{alias}"


def _two_versions(api: Api, tmp_path: Path) -> tuple[Deployed, Deployed]:
    v1 = deploy_onnx(api, tmp_path)
    v2 = deploy_onnx(api, tmp_path, tenant=v1.tenant, out_features=5, seed=1, alias="staging")
    return v1, v2


def _version_state(api: Api, d: Deployed, number: int) -> str:
    return str(api.version(d.tenant, d.model, number)["state"])


def test_promote_reports_the_replaced_version_and_history_lists_every_move(api: Api, tmp_path: Path) -> None:
    v1, v2 = _two_versions(api, tmp_path)
    moved = api.client.put(
        _alias_url(v1), json={"version": v2.version, "reason": "better"}, headers=api.headers()
    )
    assert moved.status_code == 200
    assert moved.json() == {"alias": "production", "version": 2, "previous_version": 1, "action": "promote"}
    history = api.client.get(_alias_url(v1) + "/history", headers=api.headers(v1.publisher_key)).json()
    assert [(h["action"], h["from_version"], h["to_version"], h["actor"], h["reason"]) for h in history] == [
        ("promote", 1, 2, "admin-token", "better"),
        ("promote", None, 1, "admin-token", None),
    ]


def test_a_promote_to_the_current_version_is_no_move_and_a_rollback_still_goes_back(
    api: Api, tmp_path: Path
) -> None:
    """Promoting the version an alias already has (to end a canary split, or by a retrying script) moves
    nothing: audited, but no `2 -> 2` history row, which made the rollback after it "go back" to 2."""
    v1, v2 = _two_versions(api, tmp_path)
    for _ in range(2):
        moved = api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers())
        assert moved.status_code == 200, moved.text
    assert moved.json() == {"alias": "production", "version": 2, "previous_version": 2, "action": "promote"}
    history = api.client.get(_alias_url(v1) + "/history", headers=api.headers()).json()
    assert [(h["from_version"], h["to_version"]) for h in history] == [(1, 2), (None, 1)]
    audited = api.client.get(
        "/v1/audit",
        params={"tenant": v1.tenant, "model": v1.model, "action": "alias.promote"},
        headers=api.headers(),
    ).json()
    moves = [
        (e["before"]["version"], e["after"]["version"])
        for e in audited
        if e["target"].endswith("@production")
    ]
    assert moves == [(2, 2), (1, 2), (None, 1)], "each promote is audited, the one that moved nothing too"
    rolled = api.client.post(_alias_url(v1) + "/rollback", headers=api.headers())
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == 1


def test_rollback_to_a_kept_warm_version_is_fast(api: Api, tmp_path: Path) -> None:
    v1, v2 = _two_versions(api, tmp_path)
    assert (
        api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers()).status_code == 200
    )
    assert _version_state(api, v1, 1) == "ready"  # kept warm

    started = time.perf_counter()
    rolled = api.client.post(_alias_url(v1) + "/rollback", headers=api.headers())
    elapsed_ms = (time.perf_counter() - started) * 1000

    assert rolled.status_code == 200, rolled.text
    assert rolled.json() == {"alias": "production", "version": 1, "previous_version": 2, "action": "rollback"}
    print(f"\nrollback to the kept-warm version took {elapsed_ms:.1f} ms")
    assert elapsed_ms < 1000
    assert api.state.router.resolve(tenant_id=_tenant_id(api, v1), model=v1.model).version == 1


def _tenant_id(api: Api, d: Deployed) -> int:
    return api.state.router.table.tenant_ids[d.tenant]


def test_rollback_to_an_unloaded_version_reloads_it_first(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_served(keep_warm_s=0.5, janitor_interval_s=0.2)
    v1, v2 = _two_versions(api, tmp_path)
    assert (
        api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers()).status_code == 200
    )
    deadline = time.monotonic() + 15  # released after its keep-warm period, then unloaded by the loop
    while _version_state(api, v1, 1) != "unloaded" or api.state.tritons[0].health.is_model_ready(
        v1.triton_name
    ):
        assert time.monotonic() < deadline, "v1 was not unloaded after its keep-warm period"
        time.sleep(0.1)

    failures: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        import httpx

        with httpx.Client(base_url=api.client.base_url, timeout=30) as client:
            while not stop.is_set():
                response = client.post(
                    f"/v2/models/{v1.model}/infer",
                    json=BODY,
                    headers={"Authorization": f"Bearer {v1.consumer_key}"},
                )
                if response.status_code != 200:
                    failures.append(response.status_code)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        rolled = api.client.post(
            _alias_url(v1) + "/rollback", json={"reason": "v2 regressed"}, headers=api.headers()
        )
    finally:
        time.sleep(0.3)
        stop.set()
        worker.join()
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == 1
    assert _version_state(api, v1, 1) == "ready"
    assert api.state.tritons[0].health.is_model_ready(v1.triton_name)
    assert failures == []


def test_a_rollback_whose_version_keep_warm_released_right_after_its_load_loads_it_again(
    api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keep-warm janitor may release the version between its load and the move's read of it (on a busy
    machine the move came more than CP_KEEP_WARM_S after the load): the move answered 409 "it is unloaded
    (unloaded after its keep-warm period)" (CI, `test_rollback_to_an_unloaded_version_reloads_it_first`)
    instead of loading it again, as it does when the release comes after that read."""
    v1, v2 = _two_versions(api, tmp_path)
    assert (
        api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers()).status_code == 200
    )
    loader, released = api.state.loader, list[int]()
    real_submit = loader.submit_load

    def load_then_release(version_id: int) -> Any:
        done = real_submit(version_id)
        done.result(timeout=60)
        if not released:  # what the janitor's claim does, once, right after the load
            with transaction(api.state.session_factory) as session:
                version = session.get_one(ModelVersion, version_id)
                version.state, version.state_message = "unloaded", "unloaded after its keep-warm period"
            released.append(version_id)
        return done

    monkeypatch.setattr(loader, "submit_load", load_then_release)
    with api.state.session_factory() as session:  # the version the rollback goes back to, not loaded
        one = session.scalars(select(ModelVersion).where(ModelVersion.triton_name == v1.triton_name)).one()
    with transaction(api.state.session_factory) as session:
        session.get_one(ModelVersion, one.id).state = "unloaded"
    rolled = api.client.post(_alias_url(v1) + "/rollback", headers=api.headers())
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version"] == 1 and released == [one.id]
    assert _version_state(api, v1, 1) == "ready"


def test_a_version_that_failed_to_load_cannot_be_promoted(api: Api, tmp_path: Path) -> None:
    v1 = deploy_onnx(api, tmp_path, model="py")  # alias production -> an ONNX model named "py"
    spec: dict[str, Any] = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
        "max_batch_size": 0,
    }
    assert api.create_model(v1.tenant, name="bad", format="python", **spec).status_code == 201
    assert api.create_model(v1.tenant, name="bad2", format="onnx").status_code == 201  # unrelated
    source = tmp_path / "model.py"
    source.write_text(MODEL.format(init="raise RuntimeError('cuda missing')", scale=1.0, offset=0.0))
    assert api.upload(v1.tenant, "bad", source).status_code == 201
    assert api.wait_settled(v1.tenant, "bad", 1)["state"] == "failed"

    refused = api.client.put(
        f"/v1/tenants/{v1.tenant}/models/bad/aliases/production", json={"version": 1}, headers=api.headers()
    )

    assert refused.status_code == 409
    assert "cuda missing" in refused.json()["detail"]
    model = api.client.get(f"/v1/tenants/{v1.tenant}/models/bad", headers=api.headers()).json()
    assert model["aliases"] == {}
    events = api.client.get(
        "/v1/audit", params={"tenant": v1.tenant, "action": "alias.promote"}, headers=api.headers()
    ).json()
    failed = [e for e in events if e["outcome"] == "failure"]
    assert len(failed) == 1
    assert failed[0]["target"] == f"{v1.tenant}/bad@production"
    assert "cuda missing" in failed[0]["before"]["error"]


def test_replaced_version_is_unloaded_after_keep_warm_and_others_stay(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_api(keep_warm_s=1.0, janitor_interval_s=0.2)
    v1, v2 = _two_versions(api, tmp_path)
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=3, alias="candidate")
    assert (
        api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers()).status_code == 200
    )

    deadline = time.monotonic() + 15
    triton = api.state.tritons[0].health
    while _version_state(api, v1, 1) != "unloaded" or triton.is_model_ready(v1.triton_name):
        assert time.monotonic() < deadline, "v1 was not unloaded after its keep-warm period"
        time.sleep(0.2)  # the state is recorded first, then the janitor unloads it
    assert _version_state(api, v1, 2) == "ready"  # production
    assert _version_state(api, v1, 3) == "ready"  # still named by 'candidate'

    again = api.client.post(_alias_url(v1) + "/rollback", headers=api.headers())
    assert again.status_code == 200, again.text
    assert _version_state(api, v1, 1) == "ready"


def test_concurrent_promotions_are_serialized_and_none_is_lost(api: Api, tmp_path: Path) -> None:
    v1, _v2 = _two_versions(api, tmp_path)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def promote(number: int) -> None:
        barrier.wait()
        response = api.client.put(_alias_url(v1), json={"version": number}, headers=api.headers())
        results.append(response.status_code)

    threads = [threading.Thread(target=promote, args=(n,)) for n in (1, 2, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200, 200, 200, 200]
    audited = api.client.get(
        "/v1/audit",
        params={"tenant": v1.tenant, "model": v1.model, "action": "alias.promote"},
        headers=api.headers(),
    ).json()
    moves = [  # in the order they committed (ids; a timestamp is its transaction's start, before the lock)
        (e["before"]["version"], e["after"]["version"])
        for e in sorted(audited, key=lambda e: -e["id"])
        if e["target"].endswith("@production")
    ]
    assert len(moves) == 5  # the first promotion plus four, none lost
    for newer, older in itertools.pairwise(moves):
        assert newer[0] == older[1]  # each promote starts where the previous one ended
    history = api.client.get(_alias_url(v1) + "/history", headers=api.headers()).json()
    assert [(h["from_version"], h["to_version"]) for h in history] == [m for m in moves if m[0] != m[1]], (
        "history lists the promotes that moved the alias"
    )
    for newer, older in itertools.pairwise(history):
        assert newer["from_version"] == older["to_version"]  # each move starts where the previous ended
    final = api.client.get(f"/v1/tenants/{v1.tenant}/models/{v1.model}", headers=api.headers()).json()
    assert final["aliases"]["production"] == history[0]["to_version"]


def test_publishers_move_staging_but_not_production(api: Api, tmp_path: Path) -> None:
    v1, _v2 = _two_versions(api, tmp_path)
    key = v1.publisher_key
    assert (
        api.client.put(_alias_url(v1, "staging"), json={"version": 1}, headers=api.headers(key)).status_code
        == 200
    )
    denied = api.client.put(_alias_url(v1), json={"version": 2}, headers=api.headers(key))
    assert denied.status_code == 403
    assert api.client.post(_alias_url(v1) + "/rollback", headers=api.headers(key)).status_code == 403
    assert (
        api.client.put(_alias_url(v1) + "/traffic", json={"routes": []}, headers=api.headers(key)).status_code
        == 403
    )


def test_promoting_a_version_triton_lost_loads_it_again_before_switching(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_api(reconcile_interval_s=3600)  # the loop would repair it too; here the promote must
    v1, v2 = _two_versions(api, tmp_path)
    api.state.tritons[0].client.unload_model(v2.triton_name)  # e.g. Triton restarted empty
    assert _version_state(api, v2, v2.version) == "ready"  # what the registry wants, not what Triton has
    moved = api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers())
    assert moved.status_code == 200, moved.text
    answer = api.client.post(f"/v2/models/{v1.model}/infer", json=BODY, headers=api.headers(v1.consumer_key))
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == str(v2.version)


def test_keep_warm_never_reclaims_a_version_loaded_again_since_its_release(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    # Sweeps only when the test asks; a keep-warm period that "just now" stays well inside however slow
    # the machine (with 1 s, a busy suite once took longer than that between the write and the sweep).
    api = make_api(keep_warm_s=60.0, janitor_interval_s=3600)
    v1, v2 = _two_versions(api, tmp_path)
    assert (
        api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers()).status_code == 200
    )
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with transaction(api.state.session_factory) as session:  # released long ago, but (re)loaded just now:
        version = session.scalar(select(ModelVersion).where(ModelVersion.triton_name == v1.triton_name))
        assert version is not None
        version.released_at, version.updated_at = long_ago, datetime.now(UTC)
        version_id = version.id
    janitor = api.state.janitor
    assert janitor is not None
    # The session database is shared with other tests: look only at this version.
    assert version_id not in janitor.sweep()  # a rollback on its way to it must not lose it to the janitor
    with transaction(api.state.session_factory) as session:
        session.get_one(ModelVersion, version_id).updated_at = long_ago
    assert version_id in janitor.sweep()


def test_clearing_a_canary_and_a_shadow_reroutes_at_commit_without_a_periodic_reload(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """The routes' rows go with a Core delete, which the ORM's change tracking does not see; the table
    still stops splitting and mirroring when the change commits (here with the periodic reloads off;
    the canary version stays referenced by `staging`, so releasing it writes nothing either)."""
    api = make_api(routing_refresh_s=3600, routing_poll_s=3600)
    v1, _v2 = _two_versions(api, tmp_path)
    url = _alias_url(v1) + "/traffic"
    split = {"routes": [{"version": 1, "weight": 50}, {"version": 2, "weight": 50}]}
    set_traffic = api.client.put(
        url, json={**split, "shadow": {"version": 2, "percent": 100}}, headers=api.headers()
    )
    assert set_traffic.status_code == 200, set_traffic.text
    target = api.state.router.table.models[(_tenant_id(api, v1), v1.model)].aliases["production"]
    assert target.weighted == ((1, 50), (2, 50)) and target.shadow == (2, 100)

    cleared = api.client.put(url, json={"routes": [], "shadow": None}, headers=api.headers())
    assert cleared.status_code == 200, cleared.text
    target = api.state.router.table.models[(_tenant_id(api, v1), v1.model)].aliases["production"]
    assert target.weighted == () and target.shadow is None

    assert api.client.put(url, json=split, headers=api.headers()).status_code == 200
    promoted = api.client.put(_alias_url(v1), json={"version": 2}, headers=api.headers())  # drops the split
    assert promoted.status_code == 200, promoted.text
    target = api.state.router.table.models[(_tenant_id(api, v1), v1.model)].aliases["production"]
    assert (target.version, target.weighted) == (2, ())


def test_a_load_racing_the_keep_warm_unload_ends_with_the_version_served(
    make_api: Callable[..., Api], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The janitor unloaded a version itself, after its claim, and recorded `unloaded` once Triton's
    unload returned: a rollback that asked for the version in between (its load set `ready` again) was
    overwritten and refused, 409 "it is unloaded" (CI once), the version then lost to its alias. The
    janitor now only claims; the reconcile loop unloads what is released, re-checking the state under
    the version's lock, and loads it back when a load asks for it."""
    api = make_api(keep_warm_s=60.0, janitor_interval_s=3600)  # sweeps when the test asks
    v1, v2 = _two_versions(api, tmp_path)
    moved = api.client.put(_alias_url(v1), json={"version": v2.version}, headers=api.headers())
    assert moved.status_code == 200, moved.text
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with transaction(api.state.session_factory) as session:
        version = session.scalar(select(ModelVersion).where(ModelVersion.triton_name == v1.triton_name))
        assert version is not None
        version.released_at = version.updated_at = long_ago
        version_id = version.id
    loader, record = api.state.loader, api.state.loader._record
    recording = threading.Event()

    def slow_unloaded_record(version: int, **kwargs: Any) -> None:
        if kwargs.get("state") == "unloaded":
            recording.set()
            time.sleep(1.5)  # a busy machine, between an unload's Triton call and its record
        record(version, **kwargs)

    monkeypatch.setattr(loader, "_record", slow_unloaded_record)
    janitor, triton = api.state.janitor, api.state.tritons[0].health
    assert janitor is not None
    swept: list[list[int]] = []
    sweeping = threading.Thread(target=lambda: swept.append(janitor.sweep()))
    sweeping.start()
    deadline = time.monotonic() + 30
    while not recording.is_set() and triton.is_model_ready(v1.triton_name):  # unloaded, by either part
        assert time.monotonic() < deadline, "the released version was not unloaded"
        time.sleep(0.02)

    assert loader.load(version_id) == "ready"  # what a rollback to it does first
    sweeping.join(timeout=30)
    assert version_id in swept[0]
    deadline = time.monotonic() + 30
    while _version_state(api, v1, 1) != "ready" or not triton.is_model_ready(v1.triton_name):
        assert time.monotonic() < deadline, f"v1 is {_version_state(api, v1, 1)} after its load"
        time.sleep(0.1)
