"""One served control plane (real uvicorn, Postgres, S3 server, the session's Triton) for tests/client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.served import serve, stack_settings


@pytest.fixture(scope="package")
def stack(database_url: str, s3_endpoint: str, triton: RunningTriton) -> Iterator[Api]:
    """The app on a free port with gRPC on, shared by the SDK and CLI tests (each uses fresh tenants)."""
    assert triton.repository is not None
    settings = stack_settings(
        database_url=database_url,
        s3_endpoint=s3_endpoint,
        triton_http_url=triton.http_url,
        triton_grpc_url=triton.process.grpc_url,
        repository=triton.repository,
    )
    with serve(settings) as api:
        yield api


@pytest.fixture(scope="package")
def base_url(stack: Api) -> str:
    """The app's base URL."""
    return str(stack.client.base_url).rstrip("/")
