"""A control plane served by a real uvicorn (fast path, uvloop) for a whole test module, on any Triton."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from control_plane.app import create_app
from control_plane.dataplane.fastpath import fast_path_protocol
from control_plane.settings import Settings
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.api import ADMIN_TOKEN, Api
from tests.support.procs import free_port


def stack_settings(
    *,
    database_url: str,
    s3_endpoint: str,
    triton_http_url: str,
    triton_grpc_url: str,
    repository: Path,
    **overrides: Any,
) -> Settings:
    """Settings for an app on the test Postgres and S3 server, talking to the given Triton; gRPC on."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "artifact_store": "s3",
        "s3_endpoint": s3_endpoint,
        "s3_access_key": S3_ACCESS_KEY,
        "s3_secret_key": S3_SECRET_KEY,
        "s3_bucket": f"artifacts-{uuid.uuid4().hex[:12]}",
        "model_repository": str(repository),
        "triton_urls": [triton_http_url],
        "triton_grpc_urls": [triton_grpc_url],
        "triton_runtime": "python",
        "triton_device": "cpu",
        "admin_token": ADMIN_TOKEN,
        "grpc_port": free_port(),
    }
    return Settings(**{**values, **overrides})


@contextmanager
def serve(settings: Settings, *, timeout_keep_alive: int = 5) -> Iterator[Api]:
    """Serve `create_app(settings)` with uvicorn + the fast path on a free port until the block ends."""
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
    # The client lets an idle connection go well before the server closes it: with both at 5 s (httpx's
    # default), a request sent on a connection just as the server closed it was reset (ECONNRESET, seen in
    # CI: `/metrics` read after 5 s of waiting for a slow request), and httpx does not resend it.
    limits = httpx.Limits(keepalive_expiry=timeout_keep_alive / 2)
    client = httpx.Client(base_url=f"http://127.0.0.1:{config.port}", timeout=60, limits=limits)
    try:
        yield Api(client, admin_token=ADMIN_TOKEN, settings=settings, app=app)
    finally:
        client.close()
        server.should_exit = True
        thread.join(timeout=30)
