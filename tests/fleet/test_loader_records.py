"""What the loader records in the registry, against a real Postgres: concurrent writers of a version's
state do not undo each other."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from control_plane.db.models import ModelVersion
from control_plane.fleet.loader import VersionLoader
from tests.fleet.conftest import Fleet


def test_a_load_while_a_retire_commits_leaves_the_version_retired(fleet: Fleet) -> None:
    """The loader reads the version's state before writing it: read without a lock, a retire that
    commits in between was overwritten (`loading` then `failed`), bringing the version back from
    retirement. (The loader's unload, which the same race overwrote with `unloaded`, is gone: the
    keep-warm janitor releases and the reconcile loop unloads, each under the version's lock.)"""
    version = fleet.version(state="ready")
    loader = VersionLoader(
        session_factory=fleet.session_factory,
        artifacts=fleet.artifacts,
        repository=fleet.repository,
        tritons=[],  # no Triton to load on: only the registry's part
    )
    with fleet.session_factory() as retiring:
        # Another transaction holds the version's row (as a retire does) while the load records.
        row = retiring.scalars(
            select(ModelVersion).where(ModelVersion.id == version.id).with_for_update()
        ).one()
        loading = threading.Thread(target=loader.load, args=(version.id,))
        loading.start()
        time.sleep(0.5)  # the load is waiting for the row, at its read (or, unlocked, at its write)
        row.state = "retired"
        retiring.commit()
    loading.join(timeout=10)
    assert not loading.is_alive()
    with fleet.session_factory() as session:
        assert session.scalar(select(ModelVersion.state).where(ModelVersion.id == version.id)) == "retired"
