"""A version deleted while the reconcile loop loads it, against the real registry and Triton: what the load
records cannot overwrite what the retire records after it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from control_plane.db.models import ModelVersion, Placement
from tests.support.api import Api
from tests.support.triton_models import MODEL

SPEC: dict[str, Any] = {
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
    "max_batch_size": 0,
}


def _placements(api: Api, name: str) -> list[str]:
    with api.state.session_factory() as session:
        version_id = session.scalar(select(ModelVersion.id).where(ModelVersion.triton_name == name))
        return list(session.scalars(select(Placement.state).where(Placement.version_id == version_id)))


def test_a_version_deleted_as_its_load_finishes_ends_unloaded_not_ready(
    make_api: Callable[..., Api], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The load recorded its version `ready` after giving up the version's lock: a retire that came in
    between (the model deleted while it loaded) unloaded it and recorded `unloaded` first, and the load's
    `ready` then stood over it (a review saw such placements stay ready for over 40 s, the version listed
    as resident, after Triton had unloaded it, until a pass of the loop came). The loop runs every 30 s
    here: what the load and the retire record must come out right by themselves."""
    api = make_api(reconcile_interval_s=30.0)  # no pass of its own in the test's time
    tenant = api.tenant()
    assert api.create_model(tenant, name="doomed", format="python", **SPEC).status_code == 201
    source = tmp_path / "model.py"
    source.write_text(MODEL.format(init="pass", scale=2.0, offset=0.0))
    assert api.upload(tenant, "doomed", source).status_code == 201
    name = api.version(tenant, "doomed", 1)["triton_name"]
    residency = api.state.residency
    real_loaded, measuring, go = residency.loaded, threading.Event(), threading.Event()

    def loaded_then_pause(*args: Any, **kwargs: Any) -> None:
        measuring.set()
        go.wait(10)  # Triton has the version; the load has yet to record it
        real_loaded(*args, **kwargs)

    monkeypatch.setattr(residency, "loaded", loaded_then_pause)
    url = f"/v1/tenants/{tenant}/models/doomed"
    with ThreadPoolExecutor(1) as pool:
        loading = pool.submit(api.client.post, f"{url}/versions/1/load", headers=api.headers())
        assert measuring.wait(60)
        assert api.client.delete(url, headers=api.headers()).status_code == 204
        time.sleep(1.0)  # before: the retire unloaded the version and recorded it meanwhile
        go.set()
        loading.result()
    seen: list[tuple[tuple[str, ...], bool]] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        seen.append((tuple(_placements(api, name)), name in residency.resident))
        time.sleep(0.1)
    assert seen[-5:] == [(("unloaded",), False)] * 5, seen  # settled: unloaded, not resident
    assert not api.state.tritons[0].health.is_model_ready(name)
