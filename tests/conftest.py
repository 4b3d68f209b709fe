"""Shared fixtures: a real Postgres, a real S3-compatible server (moto_server), builders."""

from __future__ import annotations

import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from minio import Minio
from sqlalchemy.orm import Session

from control_plane.db import migrate
from control_plane.db.session import make_engine, make_session_factory
from tests.support import procs

pytest_plugins = ["tests.fixtures_triton", "tests.appfixtures"]

ADMIN_URL = os.environ.get("CP_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
S3_ACCESS_KEY = "testing"
S3_SECRET_KEY = "testing-secret"


def _admin_conninfo() -> str:
    return ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture(scope="session")
def create_database() -> Iterator[Callable[[], str]]:
    """Factory of throwaway databases on the test Postgres; all dropped at the end."""
    created: list[str] = []

    def make() -> str:
        name = f"cp_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return ADMIN_URL.rsplit("/", 1)[0] + "/" + name

    yield make
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_url(create_database: Callable[[], str]) -> str:
    """One database migrated to head, shared by the session."""
    url = create_database()
    migrate.upgrade(url)
    return url


@pytest.fixture
def db_session(database_url: str) -> Iterator[Session]:
    """A session whose work is rolled back after the test."""
    engine = make_engine(database_url, pool_size=1)
    connection = engine.connect()
    outer = connection.begin()
    session = make_session_factory(engine)(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        connection.close()
        engine.dispose()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real S3-compatible server: the one scripts/test started, or our own moto_server."""
    given = os.environ.get("CP_TEST_S3_ENDPOINT")
    if given:
        yield given
        return
    port = procs.free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = procs.start([moto, "-H", "127.0.0.1", "-p", str(port)], log=log)
    try:
        procs.wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(proc)


@pytest.fixture(scope="session")
def minio_client(s3_endpoint: str) -> Minio:
    """A minio SDK client for the test S3 server."""
    host = s3_endpoint.split("://", 1)[1]
    return Minio(host, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False, region="us-east-1")


@pytest.fixture
def bucket(minio_client: Minio) -> str:
    """A fresh, empty bucket name (not yet created)."""
    return f"t-{uuid.uuid4().hex[:16]}"
