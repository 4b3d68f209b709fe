"""An app wired to the real Postgres, the real S3 server and the session's real Triton."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from fastapi.testclient import TestClient
from minio import Minio

from control_plane.app import create_app
from control_plane.settings import Settings
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.fixtures_triton import RunningTriton
from tests.support.api import ADMIN_TOKEN, Api
from tests.support.served import serve

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(database_url: str, s3_endpoint: str, triton: RunningTriton) -> MakeSettings:
    """Settings for one app: fresh artifact bucket, the session Triton and its folder repository."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": database_url,
            "artifact_store": "s3",
            "s3_endpoint": s3_endpoint,
            "s3_access_key": S3_ACCESS_KEY,
            "s3_secret_key": S3_SECRET_KEY,
            "s3_bucket": f"artifacts-{uuid.uuid4().hex[:12]}",
            "model_repository": str(triton.repository),
            "triton_urls": [triton.http_url],
            "triton_runtime": "python",
            "triton_device": "cpu",
            "admin_token": ADMIN_TOKEN,
            "grpc_port": 0,
        }
        return Settings(**{**values, **overrides})

    return make


@pytest.fixture
def make_api(make_settings: MakeSettings) -> Iterator[Callable[..., Api]]:
    """Start apps with setting overrides; all are shut down after the test."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> Api:
        settings = make_settings(**overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return Api(client, admin_token=ADMIN_TOKEN, settings=settings)

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def make_served(make_settings: MakeSettings) -> Iterator[Callable[..., Api]]:
    """Apps served by a real uvicorn (uvloop + httptools) on a free port, for stock HTTP clients."""
    with ExitStack() as stack:

        def start(*, timeout_keep_alive: int = 5, **overrides: Any) -> Api:
            return stack.enter_context(
                serve(make_settings(**overrides), timeout_keep_alive=timeout_keep_alive)
            )

        yield start


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """The default app."""
    return make_api()


def bucket_objects(minio_client: Minio, bucket: str) -> list[str]:
    """Every object name in a bucket (empty if the bucket does not exist)."""
    if not minio_client.bucket_exists(bucket):
        return []
    return sorted(o.object_name or "" for o in minio_client.list_objects(bucket, recursive=True))
