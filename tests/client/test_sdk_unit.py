"""The SDK's error mapping and streamed upload, on httpx.MockTransport (no server)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from control_plane.client import (
    ApiError,
    BadGateway,
    BadRequest,
    ConnectionFailed,
    ControlPlane,
    ControlPlaneError,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    UpstreamTimeout,
    WaitTimeout,
)
from control_plane.client import upload as upload_module

Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler) -> ControlPlane:
    """A client whose requests go to `handler`."""
    return ControlPlane("http://cp.test", "secret", transport=httpx.MockTransport(handler))


def version_body(number: int, state: str) -> dict[str, object]:
    """A version as the API answers it (the fields the SDK needs)."""
    now = "2026-01-01T00:00:00+00:00"
    return {
        "version": number,
        "state": state,
        "sha256": "ab",
        "size_bytes": 1,
        "created_at": now,
        "updated_at": now,
    }


@pytest.mark.parametrize(
    ("status", "body", "cls", "kind", "detail"),
    [
        (401, {"error": "Unauthorized", "detail": "invalid or revoked API key"}, Unauthorized, "Unauthorized",
         "invalid or revoked API key"),
        (404, {"error": "ModelNotFound", "detail": "model 'm' not found"}, NotFound, "ModelNotFound",
         "model 'm' not found"),
        (422, {"error": "InvalidRequest", "detail": "name: too long"}, InvalidRequest, "InvalidRequest",
         "name: too long"),
        (400, {"error": "input 'x' has shape [3]", "kind": "BadRequest"}, BadRequest, "BadRequest",
         "input 'x' has shape [3]"),
        (504, {"error": "UpstreamTimeout", "detail": "no answer"}, UpstreamTimeout, "UpstreamTimeout",
         "no answer"),
        (418, {"error": "Teapot", "detail": "short and stout"}, ApiError, "Teapot", "short and stout"),
        (403, {"error": "QuotaExceeded", "detail": "max_keys of 2 reached"}, QuotaExceeded, "QuotaExceeded",
         "max_keys of 2 reached"),  # a Forbidden too
        (502, "<html>bad gateway</html>", BadGateway, "BadGateway", "<html>bad gateway</html>"),
    ],
)  # fmt: skip
def test_error_bodies_become_one_exception_per_kind(
    status: int, body: object, cls: type[ApiError], kind: str, detail: str
) -> None:
    content = json.dumps(body).encode() if isinstance(body, dict) else str(body).encode()
    cp = client(lambda request: httpx.Response(status, content=content))

    with pytest.raises(cls) as raised:
        cp.tenants.list()

    assert type(raised.value) is cls
    assert (raised.value.status_code, raised.value.kind, raised.value.detail) == (status, kind, detail)


def test_retry_after_is_kept() -> None:
    answers = iter([(429, "RateLimited"), (503, "ServiceUnavailable")])

    def handler(request: httpx.Request) -> httpx.Response:
        status, kind = next(answers)
        return httpx.Response(status, json={"error": kind, "detail": "later"}, headers={"Retry-After": "3"})

    cp = client(handler)
    with pytest.raises(RateLimited) as limited:
        cp.predict("m", {"x": [1.0]})
    with pytest.raises(ServiceUnavailable) as unavailable:
        cp.predict("m", {"x": [1.0]})

    assert limited.value.retry_after == 3 and unavailable.value.retry_after == 3


def test_unreachable_server_is_connection_failed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ConnectionFailed, match=r"cannot reach the control plane at http://cp\.test"):
        client(handler).status()


def test_upload_streams_the_file_in_chunks_with_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upload_module, "CHUNK", 1000)
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(bytes(range(256)) * 10)  # 2560 bytes: three chunks
    seen: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["length"] = int(request.headers["content-length"])
        seen["chunks"] = list(request.stream)  # type: ignore[arg-type]
        seen["type"] = request.headers["content-type"]
        seen["auth"] = request.headers["authorization"]
        return httpx.Response(201, json=version_body(1, "registered"))

    progress: list[tuple[int, int]] = []
    version = client(handler).versions.upload(
        "acme", "mlp", artifact, progress=lambda s, t: progress.append((s, t))
    )

    body = b"".join(seen["chunks"])  # type: ignore[arg-type]
    boundary = str(seen["type"]).split("boundary=")[1]
    assert version.version == 1 and seen["auth"] == "Bearer secret"
    assert len(body) == seen["length"]
    assert artifact.read_bytes() in body and body.endswith(f"--{boundary}--\r\n".encode())
    assert b'name="file"; filename="model.onnx"' in body
    assert progress == [(0, 2560), (1000, 2560), (2000, 2560), (2560, 2560)]


def test_wait_ready_times_out_naming_the_state() -> None:
    cp = client(lambda request: httpx.Response(200, json=version_body(3, "loading")))

    with pytest.raises(WaitTimeout, match=r"version 3 of model 'mlp' still loading after 0\.05 s"):
        cp.versions.wait_ready("acme", "mlp", 3, timeout=0.05, poll_s=0.01)


def test_names_are_percent_encoded_in_paths() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return httpx.Response(404, json={"error": "NotFound", "detail": "no"})

    with pytest.raises(NotFound):
        client(handler).models.get("acme", "../x y")

    assert paths == ["/v1/tenants/acme/models/..%2Fx%20y"]


def test_wait_ready_asks_for_the_load_of_a_version_nothing_loads() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            return httpx.Response(200, json=version_body(2, "ready"))
        return httpx.Response(200, json=version_body(2, "registered"))

    ready = client(handler).versions.wait_ready("acme", "mlp", 2, timeout=5, poll_s=0.2)

    assert ready.state == "ready"
    assert calls[-1] == "POST /v1/tenants/acme/models/mlp/versions/2/load"
    assert set(calls[:-1]) == {"GET /v1/tenants/acme/models/mlp/versions/2"}


def test_a_key_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=[])

    with pytest.raises(ControlPlaneError, match="spaces or line breaks"):
        ControlPlane("http://cp.test", "cp_abc\n", transport=httpx.MockTransport(handler))

    assert sent == []


def test_json_output_keeps_the_apis_timestamps() -> None:
    stamp = "2026-12-01T09:26:56.280067+00:00"
    cp = client(lambda request: httpx.Response(200, json=[{"name": "acme", "created_at": stamp}]))

    assert cp.tenants.list()[0].to_json() == {"name": "acme", "created_at": stamp}


def test_listings_follow_the_next_links_and_never_send_the_key_to_another_place() -> None:
    stamp = "2026-12-01T09:26:56.280067+00:00"
    seen: list[str] = []

    def pages(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.params.get("after") is None:
            return httpx.Response(
                200, json=[{"name": "a", "created_at": stamp}], headers={"Link": '<?after=a>; rel="next"'}
            )
        more = {"Link": '<?after=b>; rel="next"'}  # an empty page ends the listing, whatever it links
        return httpx.Response(
            200,
            json=[{"name": "b", "created_at": stamp}] if request.url.params["after"] == "a" else [],
            headers=more,
        )

    behind = ControlPlane(
        "http://cp.test/cp", "secret", transport=httpx.MockTransport(pages)
    )  # a path prefix
    assert [t.name for t in behind.tenants.list()] == ["a", "b"]
    assert seen == [
        "http://cp.test/cp/v1/tenants",
        "http://cp.test/cp/v1/tenants?after=a",
        "http://cp.test/cp/v1/tenants?after=b",
    ]

    for hostile, refusal in (
        ("http://evil.test/v1/tenants?after=a", "another place"),
        ("//evil.test/v1/tenants", "another place"),
        ("/./../..//evil.test", "another place"),
        ("/v1/keys", "another place"),
        ("?after=a\tb", "not a URL"),
        ("/v1/tenants", "in a circle"),
    ):
        sent: list[httpx.Request] = []

        def elsewhere(
            request: httpx.Request, link: str = hostile, sent: list[httpx.Request] = sent
        ) -> httpx.Response:
            sent.append(request)
            return httpx.Response(
                200, json=[{"name": "a", "created_at": stamp}], headers={"Link": f'<{link}>; rel="next"'}
            )

        with pytest.raises(ControlPlaneError, match=refusal):
            client(elsewhere).tenants.list()
        assert [r.url.host for r in sent] == ["cp.test"], hostile


def test_audit_reads_as_many_pages_as_its_limit_needs() -> None:
    asked: list[dict[str, str]] = []

    def events(request: httpx.Request) -> httpx.Response:
        asked.append(dict(request.url.params))
        start = int(request.url.params.get("after", 0))
        size = int(request.url.params["limit"])
        body = [audit_event(start + i + 1) for i in range(size)]
        link = f'</v1/audit?after={start + size}&limit={size}>; rel="next"'
        return httpx.Response(200, json=body, headers={"Link": link})

    found = client(events).audit.list(limit=2500)

    assert [e.id for e in found] == list(range(1, 2501))
    assert [a.get("after") for a in asked] == [None, "1000", "2000"] and asked[0]["limit"] == "1000"


def audit_event(number: int) -> dict[str, object]:
    """An audit event as the API answers it."""
    stamp = "2026-12-01T09:26:56.280067+00:00"
    return {
        "id": number,
        "created_at": stamp,
        "actor": "admin",
        "action": "a",
        "target": "t",
        "outcome": "success",
    }


def test_a_key_with_an_expiry_sends_it_as_iso_8601_and_a_naive_time_is_refused() -> None:
    sent: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        now = "2026-01-01T00:00:00+00:00"
        body = {"id": 1, "prefix": "abc", "role": "consumer", "created_at": now, "key": "cp_abc_x"}
        return httpx.Response(201, json={**body, "expires_at": sent[-1].get("expires_at")})

    cp = client(handler)
    when = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    created = cp.keys.create("acme", role="consumer", expires_at=when)
    assert sent[-1]["expires_at"] == "2027-01-01T12:00:00+00:00" and created.expires_at == when
    cp.keys.create("acme", role="consumer")
    assert "expires_at" not in sent[-1]  # the server's default (its longest key life, if any)
    with pytest.raises(ValueError, match="timezone-aware"):
        cp.keys.create("acme", role="consumer", expires_at=datetime(2027, 1, 1))
    assert len(sent) == 2


def test_an_empty_name_or_a_redirect_is_never_taken_for_success() -> None:
    """`tenants.delete("")` sent `DELETE /v1/tenants/`, which the server answers with a redirect (307) to
    the listing: the SDK returned as if it had deleted a tenant, and the CLI said so."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.path)
        return httpx.Response(307, headers={"location": "http://cp.test/v1/tenants"})

    with pytest.raises(ValueError, match="a name may not be empty"):
        client(handler).tenants.delete("")
    assert sent == []
    with pytest.raises(ControlPlaneError, match="unexpected answer 307 to DELETE"):
        client(handler).tenants.delete("acme")
