"""Fixtures of the registry tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
from minio import Minio
from sqlalchemy import func, select

from control_plane.db.models import AuditEvent, Model, ModelVersion
from control_plane.db.session import make_engine
from tests.appfixtures import bucket_objects
from tests.support.api import Api


@pytest.fixture
def nothing_new(api: Api, minio_client: Minio) -> Iterator[Callable[[], AbstractContextManager[None]]]:
    """Assert that a block adds no model, version, audit event or object."""
    engine = make_engine(api.settings.database_url, pool_size=1)

    def counts() -> tuple[int, int, int, list[str]]:
        with engine.connect() as conn:
            models = conn.scalar(select(func.count()).select_from(Model))
            versions = conn.scalar(select(func.count()).select_from(ModelVersion))
            # denied calls are audited as failures; nothing else may be recorded
            events = conn.scalar(select(func.count()).where(AuditEvent.outcome == "success"))
        return models or 0, versions or 0, events or 0, bucket_objects(minio_client, api.settings.s3_bucket)

    @contextmanager
    def check() -> Iterator[None]:
        before = counts()
        yield
        assert counts() == before

    yield check
    engine.dispose()
