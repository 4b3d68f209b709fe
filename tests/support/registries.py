"""Apps on either registry: the session's Postgres, or a SQLite database of their own (which ignores row
locks, so races that Postgres serializes are worth testing there too)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from control_plane.db import migrate
from tests.support.api import Api


def on_registry(start: Callable[..., Api], tmp_path: Path, registry: str, **overrides: Any) -> Api:
    """`start(**overrides)` (`make_api` or `make_served`) on Postgres, or with `registry == "sqlite"` on a
    migrated SQLite file in `tmp_path`."""
    if registry == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        migrate.upgrade(url)
        return start(database_url=url, **overrides)
    return start(**overrides)
