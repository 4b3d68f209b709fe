"""Health probes and the admin status page against the real database, S3 server and Triton."""

from __future__ import annotations

from sqlalchemy import select

from control_plane.artifacts import S3ArtifactStore, make_minio_client
from control_plane.db.models import TritonInstance
from control_plane.db.session import make_engine
from tests.support.api import Api
from tests.support.procs import free_port


def test_live_and_ready(api: Api) -> None:
    assert api.client.get("/v2/health/live").status_code == 200
    assert api.client.get("/v2/health/ready").status_code == 200


def test_not_ready_without_a_ready_triton(make_api) -> None:
    api = make_api(triton_urls=[f"http://127.0.0.1:{free_port()}"], triton_timeout_s=1.0)
    response = api.client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_status_requires_an_admin(api: Api) -> None:
    assert api.client.get("/v1/status").status_code == 401
    assert api.client.get("/v1/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    tenant = api.tenant()
    publisher = api.key(tenant, "publisher")
    forbidden = api.client.get("/v1/status", headers=api.headers(publisher))
    assert forbidden.status_code == 403
    assert forbidden.json() == {"error": "Forbidden", "detail": "admin role required"}


def test_status_shows_database_store_and_triton(api: Api) -> None:
    response = api.client.get("/v1/status", headers=api.headers())
    assert response.status_code == 200
    body = response.json()
    assert body["database"] == {"ok": True, "detail": "postgresql"}
    assert body["artifact_store"] == {"ok": True, "detail": "s3"}
    url = api.settings.triton_urls[0]
    port = int(url.rsplit(":", 1)[1])
    assert body["tritons"] == [
        {
            "name": url.split("://", 1)[1],
            "http_url": url,
            "grpc_url": f"127.0.0.1:{port + 1}",
            "state": "ready",
            "embedded": False,
        }
    ]
    engine = make_engine(api.settings.database_url, pool_size=1)
    with engine.connect() as conn:
        assert url in conn.scalars(select(TritonInstance.http_url)).all()
    engine.dispose()


def test_status_reports_an_unreachable_artifact_store(make_api) -> None:
    api = make_api()
    closed = make_minio_client(f"http://127.0.0.1:{free_port()}", "k", "s", "us-east-1", 1.0)
    api.state.artifacts = S3ArtifactStore(closed, "artifacts", create_bucket=False)
    body = api.client.get("/v1/status", headers=api.headers()).json()
    assert body["artifact_store"]["ok"] is False
    assert body["database"]["ok"] is True


def test_errors_are_json_with_a_request_id(api: Api) -> None:
    response = api.client.get("/v1/nothing-here", headers={"X-Request-ID": "req-123"})
    assert response.status_code == 404
    assert response.json()["error"] == "NotFound"
    assert response.headers["x-request-id"] == "req-123"
    bad = api.client.post("/v1/tenants", json={"nom": "x"}, headers=api.headers())
    assert bad.status_code == 422
    assert bad.json()["error"] == "InvalidRequest"
    assert len(bad.headers["x-request-id"]) == 32
