"""An app wired to the real Postgres, the real S3 server and the session's real Triton."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from minio import Minio

from control_plane.app import create_app
from control_plane.dataplane.fastpath import fast_path_protocol
from control_plane.settings import Settings
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.procs import free_port

ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex

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
    servers: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def start(*, timeout_keep_alive: int = 5, **overrides: Any) -> Api:
        settings = make_settings(**overrides)
        app = create_app(settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=free_port(),
            loop="uvloop",
            http=fast_path_protocol(app),
            log_level="warning",
            timeout_keep_alive=timeout_keep_alive,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        client = httpx.Client(base_url=f"http://127.0.0.1:{config.port}", timeout=60)
        servers.append((server, thread, client))
        return Api(client, admin_token=ADMIN_TOKEN, settings=settings, app=app)

    yield start
    for server, thread, client in servers:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """The default app."""
    return make_api()


def bucket_objects(minio_client: Minio, bucket: str) -> list[str]:
    """Every object name in a bucket (empty if the bucket does not exist)."""
    if not minio_client.bucket_exists(bucket):
        return []
    return sorted(o.object_name or "" for o in minio_client.list_objects(bucket, recursive=True))
