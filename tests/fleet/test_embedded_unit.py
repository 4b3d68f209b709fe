"""How many loads run at once on the embedded Triton (`embedded_loads`), and that each instance's loads
are capped by its own limit (`Actions.load_slots`)."""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any

import pytest

from control_plane.fleet.actions import Actions
from control_plane.fleet.backoff import Backoff
from control_plane.fleet.embedded import EMBEDDED, embedded_loads
from control_plane.fleet.observed import Observed
from control_plane.settings import Settings


def _settings(**values: Any) -> Settings:
    return Settings(database_url="sqlite://", admin_token="t" * 32, **values)


def test_the_embedded_triton_loads_at_most_one_version_per_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert embedded_loads(_settings()) == 2, "4 by default, 2 on a 2-core machine"
    assert embedded_loads(_settings(reconcile_loads_per_instance=1)) == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    assert embedded_loads(_settings()) == 4, "the fleet's setting on a big machine"
    assert embedded_loads(_settings(triton_embedded_loads=6)) == 6, "set outright"
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert embedded_loads(_settings()) == 1


def test_each_instance_has_its_own_load_limit() -> None:
    actions = Actions(
        session_factory=None,  # type: ignore[arg-type]
        loader=SimpleNamespace(),  # type: ignore[arg-type]
        observed=Observed(),
        backoff=Backoff(initial_s=1.0, max_s=2.0),
        loads_per_instance=4,
        unload_grace_s=0.0,
        load_limits={EMBEDDED: 2},
    )
    assert actions.load_slots(EMBEDDED) == 2 and actions.load_slots("remote") == 4
