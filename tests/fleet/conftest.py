"""A fleet of its own per test: fresh Postgres database, S3 artifact bucket, folder repository, loader."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from control_plane.artifacts import S3ArtifactStore, make_minio_client
from control_plane.db import migrate
from control_plane.db.models import ModelVersion
from control_plane.db.session import make_engine, make_session_factory, transaction
from control_plane.fleet.instances import TritonEndpoint, register_instances
from control_plane.fleet.loader import VersionLoader
from control_plane.fleet.reconciler import Reconciler
from control_plane.modelrepo.folder import FolderModelRepository
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.fixtures_triton import RunningTriton
from tests.support import builders
from tests.support.triton_models import CONFIG, MODEL


@dataclass
class Fleet:
    """Registry, artifacts and repository shared by the Tritons and reconcilers of one test."""

    database_url: str
    engine: Engine
    session_factory: sessionmaker[Session]
    artifacts: S3ArtifactStore
    repository: FolderModelRepository
    tenant: str

    def endpoint(self, running: RunningTriton | str, *, name: str | None = None) -> TritonEndpoint:
        """A fleet endpoint for a started Triton (or any URL), registered as an instance."""
        url = running if isinstance(running, str) else running.http_url
        endpoint = TritonEndpoint.connect(
            name=name or url.split("://", 1)[1],
            http_url=url,
            grpc_url="127.0.0.1:1",
            timeout_s=5,
            load_timeout_s=60,
            health_timeout_s=1,
        )
        with transaction(self.session_factory) as session:
            register_instances(session, [endpoint])
        return endpoint

    def version(self, *, state: str = "ready", init: str = "pass", scale: float = 2.0) -> ModelVersion:
        """A Python-backend version (OUTPUT0 = INPUT0 * scale) with its artifact stored, in `state`."""
        source = MODEL.format(init=init, scale=scale, offset=0.0).encode()
        stored = self.artifacts.put(io.BytesIO(source))
        with transaction(self.session_factory) as session:
            tenant = builders.tenant(session, name=builders.unique_name(self.tenant))
            model = builders.model(session, tenant_row=tenant, format="python")
            name = f"{tenant.name}--{model.name}--v1"
            return builders.version(
                session,
                model_row=model,
                triton_name=name,
                sha256=stored.sha256,
                artifact_uri=self.artifacts.uri_for(stored.sha256),
                size_bytes=len(source),
                config_text=CONFIG.format(name=name),
                state=state,
            )

    def set_state(self, version: ModelVersion, state: str) -> None:
        """Change a version's registry state."""
        with transaction(self.session_factory) as session:
            session.get_one(ModelVersion, version.id).state = state


MakeReconciler = Callable[..., Reconciler]


@pytest.fixture
def fleet(
    create_database: Callable[[], str], s3_endpoint: str, tmp_path: Path, triton_backend_dir: Path
) -> Iterator[Fleet]:
    """A fleet of this test's own (nothing else reconciles its database)."""
    url = create_database()
    migrate.upgrade(url)
    engine = make_engine(url, pool_size=4)
    client = make_minio_client(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, "us-east-1", 10.0)
    yield Fleet(
        database_url=url,
        engine=engine,
        session_factory=make_session_factory(engine),
        artifacts=S3ArtifactStore(client, f"fleet-{uuid.uuid4().hex[:12]}"),
        repository=FolderModelRepository(tmp_path / "repository"),
        tenant="fleet",
    )
    engine.dispose()


@pytest.fixture
def make_reconciler(fleet: Fleet) -> Iterator[MakeReconciler]:
    """Reconcilers (not started) over the given endpoints; stopped after the test."""
    made: list[tuple[Reconciler, VersionLoader, list[TritonEndpoint]]] = []

    def make(tritons: list[TritonEndpoint], **options: Any) -> Reconciler:
        loader = VersionLoader(
            session_factory=fleet.session_factory,
            artifacts=fleet.artifacts,
            repository=fleet.repository,
            tritons=tritons,
        )
        values: dict[str, Any] = {"interval_s": 3600.0, "database_url": fleet.database_url, **options}
        reconciler = Reconciler(
            session_factory=fleet.session_factory, loader=loader, tritons=tritons, **values
        )
        made.append((reconciler, loader, tritons))
        return reconciler

    yield make
    for reconciler, loader, tritons in made:
        reconciler.stop()
        loader.shutdown()
        for endpoint in tritons:
            endpoint.close()
