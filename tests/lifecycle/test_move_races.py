"""Moves of one alias at once, on Postgres and on SQLite (which ignores row locks): each move records the
version it really replaced, so the history is one chain, a rollback goes where it should, and the version
displaced starts its keep-warm period."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.lifecycle import service
from control_plane.registry import repository
from tests.support.api import Api
from tests.support.deploy import Deployed, deploy_onnx
from tests.support.registries import on_registry


def _three_versions(api: Api, tmp_path: Path) -> Deployed:
    """production -> 1; versions 2 and 3 loaded (named by aliases of their own)."""
    v1 = deploy_onnx(api, tmp_path)
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=1, alias="two")
    deploy_onnx(api, tmp_path, tenant=v1.tenant, seed=2, alias="three")
    return v1


def _promote(api: Api, d: Deployed, number: int) -> httpx.Response:
    url = f"/v1/tenants/{d.tenant}/models/{d.model}/aliases/production"
    return api.client.put(url, json={"version": number}, headers=api.headers())


def _chain(api: Api, d: Deployed) -> list[tuple[int | None, int]]:
    url = f"/v1/tenants/{d.tenant}/models/{d.model}/aliases/production/history"
    history = api.client.get(url, headers=api.headers()).json()
    moves = [(h["from_version"], h["to_version"]) for h in history]
    for newer, older in pairwise(moves):
        assert newer[0] == older[1], f"the history is no chain: {moves}"
    return moves


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_a_move_that_read_the_alias_early_records_the_version_another_move_put_there(
    make_api: Callable[..., Api], tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promote reads the alias before its load (its quota check); another promote commits meanwhile: the
    move records the version the other put there."""
    api = on_registry(make_api, tmp_path, registry)
    d = _three_versions(api, tmp_path)
    real, paused, go = service.load_unlocked, threading.Event(), threading.Event()

    def pause_the_first(*args: Any, **kwargs: Any) -> None:
        if not paused.is_set():
            paused.set()
            go.wait(10)
        real(*args, **kwargs)

    monkeypatch.setattr(service, "load_unlocked", pause_the_first)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(_promote, api, d, 2)
        assert paused.wait(30)
        other = _promote(api, d, 3)
        assert other.status_code == 200 and other.json()["previous_version"] == 1, other.text
        go.set()
        moved = first.result()
    assert moved.status_code == 200, moved.text
    assert moved.json()["previous_version"] == 3
    assert _chain(api, d) == [(3, 2), (1, 3), (None, 1)]
    assert (
        api.client.post(
            f"/v1/tenants/{d.tenant}/models/{d.model}/aliases/production/rollback", headers=api.headers()
        ).json()["version"]
        == 3
    )


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_two_moves_at_once_form_one_chain(
    make_api: Callable[..., Api], tmp_path: Path, registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One move pauses right after its locked read of the alias; another starts. Postgres: the other waits
    for the model's lock. SQLite ignored that lock: the other read version 1 too, and both recorded 1."""
    api = on_registry(make_api, tmp_path, registry)
    d = _three_versions(api, tmp_path)
    real, paused, go = repository.get_alias, threading.Event(), threading.Event()

    def pause_the_first_locked_read(session: Any, *, model_id: int, name: str, lock: bool = False) -> Any:
        found = real(session, model_id=model_id, name=name, lock=lock)
        if lock and name == "production" and not paused.is_set():
            paused.set()
            go.wait(10)
        return found

    monkeypatch.setattr(repository, "get_alias", pause_the_first_locked_read)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_promote, api, d, 2)
        assert paused.wait(30)
        other = pool.submit(_promote, api, d, 3)
        time.sleep(0.5)  # the other is on its way: it waits for the first, or (unlocked) reads meanwhile
        go.set()
        answers = [first.result(), other.result()]
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    moves = _chain(api, d)
    assert len(moves) == 3 and moves[-1] == (None, 1)
    assert sorted(int(a.json()["previous_version"]) for a in answers) == sorted([1, int(moves[0][0] or 0)])


@pytest.mark.parametrize("registry", ["postgres", "sqlite"])
def test_a_locked_read_of_an_alias_is_fresh(
    make_api: Callable[..., Api], tmp_path: Path, registry: str
) -> None:
    """What the moves rely on: a session that read the alias before another committed a move sees the move
    on its locked read."""
    api = on_registry(make_api, tmp_path, registry)
    d = _three_versions(api, tmp_path)
    factory = api.state.session_factory
    with factory() as session:
        model_id = repository.get_alias(session, model_id=_model_id(api, d), name="production")
        assert model_id is not None and model_id.version_id == _version_id(api, d, 1)
        assert _promote(api, d, 2).status_code == 200  # committed by another session meanwhile
        fresh = repository.get_alias(session, model_id=model_id.model_id, name="production", lock=True)
        assert fresh is not None and fresh.version_id == _version_id(api, d, 2)


def _model_id(api: Api, d: Deployed) -> int:
    from sqlalchemy import select

    from control_plane.db.models import Model, Tenant

    with api.state.session_factory() as session:
        found = session.scalar(
            select(Model.id)
            .join(Tenant, Model.tenant_id == Tenant.id)
            .where(Tenant.name == d.tenant, Model.name == d.model, Model.deleted_at.is_(None))
        )
    assert found is not None
    return int(found)


def _version_id(api: Api, d: Deployed, number: int) -> int:
    from sqlalchemy import select

    from control_plane.db.models import ModelVersion

    with api.state.session_factory() as session:
        found = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.model_id == _model_id(api, d), ModelVersion.version == number
            )
        )
    assert found is not None
    return int(found)
