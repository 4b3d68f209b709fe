"""S3-specific behaviour: metadata, multipart clean-up, bucket creation, errors at the boundary."""

from __future__ import annotations

import hashlib
import io
import time
from typing import Any

import pytest
import urllib3
from minio import Minio
from minio.error import S3Error

from control_plane.artifacts import ArtifactStoreUnavailable, S3ArtifactStore, make_minio_client
from control_plane.artifacts.base import content_key
from control_plane.artifacts.s3 import SHA256_META, _Body
from tests.artifacts.conftest import Backend
from tests.artifacts.streams import GeneratedStream, MiB, digest_of
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.procs import free_port


@pytest.fixture
def client(s3_endpoint: str) -> Minio:
    """A client of our own, so that patching it cannot leak into other tests."""
    return make_minio_client(s3_endpoint, S3_ACCESS_KEY, S3_SECRET_KEY, "us-east-1", 10.0)


@pytest.fixture
def s3(client: Minio, bucket: str) -> Backend:
    return Backend("s3", S3ArtifactStore(client, bucket, part_size=5 * MiB), client=client, bucket=bucket)


def _spy(monkeypatch: pytest.MonkeyPatch, client: Minio, name: str, *, fail_first: bool = False) -> list[Any]:
    calls: list[Any] = []
    real = getattr(client, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if fail_first and len(calls) == 1:
            raise urllib3.exceptions.ProtocolError("connection reset while aborting")
        return real(*args, **kwargs)

    monkeypatch.setattr(client, name, spy)
    return calls


def test_sha256_is_stored_as_user_metadata(s3: Backend) -> None:
    stored = s3.store.put(io.BytesIO(b"meta"))
    assert s3.client is not None
    obj = s3.client.stat_object(s3.bucket, content_key(stored.sha256))
    assert obj.metadata is not None
    assert obj.metadata[SHA256_META] == hashlib.sha256(b"meta").hexdigest()
    assert obj.size == 4


def test_leftover_detector_sees_unfinished_multipart_uploads(s3: Backend) -> None:
    assert s3.client is not None
    upload_id = s3.client._create_multipart_upload(s3.bucket, "uploads/forgotten", {})
    assert s3.incomplete_uploads() == [f"uploads/forgotten:{upload_id}"]
    s3.client._abort_multipart_upload(s3.bucket, "uploads/forgotten", upload_id)
    assert s3.incomplete_uploads() == []


def test_failed_stream_aborts_the_started_multipart_upload(
    s3: Backend, client: Minio, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _spy(monkeypatch, client, "_create_multipart_upload")
    parts = _spy(monkeypatch, client, "_upload_part")

    with pytest.raises(OSError, match="client went away"):
        s3.store.put(GeneratedStream(40 * MiB, fail_after=17 * MiB))  # type: ignore[arg-type]

    assert len(created) == 1 and created[0][1].startswith("uploads/")
    assert len(parts) == 3
    assert s3.leftovers() == []


def test_multipart_upload_is_aborted_even_when_minios_own_abort_fails(
    s3: Backend, client: Minio, monkeypatch: pytest.MonkeyPatch
) -> None:
    aborts = _spy(monkeypatch, client, "_abort_multipart_upload", fail_first=True)

    with pytest.raises(ArtifactStoreUnavailable):  # minio raises the failed abort, not the stream error
        s3.store.put(GeneratedStream(40 * MiB, fail_after=11 * MiB))  # type: ignore[arg-type]

    assert len(aborts) == 2
    assert s3.leftovers() == []


def test_large_objects_are_promoted_with_compose(s3: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(s3.store, S3ArtifactStore) and s3.client is not None
    composed = _spy(monkeypatch, s3.client, "compose_object")
    s3.store.copy_limit = 1 * MiB

    stored = s3.store.put(GeneratedStream(6 * MiB))  # type: ignore[arg-type]

    assert len(composed) == 1
    assert stored.sha256 == digest_of(6 * MiB)
    metadata = s3.client.stat_object(s3.bucket, content_key(stored.sha256)).metadata
    assert metadata is not None and metadata[SHA256_META] == stored.sha256
    assert s3.keys() == [content_key(stored.sha256)]


def test_parallel_part_uploads_round_trip(client: Minio, bucket: str) -> None:
    store = S3ArtifactStore(client, bucket, part_size=5 * MiB, parallel_uploads=3)
    stored = store.put(GeneratedStream(21 * MiB))  # type: ignore[arg-type]
    assert stored.sha256 == digest_of(21 * MiB)
    with store.open(stored.sha256) as reader:
        assert hashlib.sha256(reader.read()).hexdigest() == stored.sha256


def test_bucket_is_created_on_construction(client: Minio, bucket: str) -> None:
    assert not client.bucket_exists(bucket)
    S3ArtifactStore(client, bucket)
    assert client.bucket_exists(bucket)
    S3ArtifactStore(client, bucket)  # already there: fine


@pytest.mark.parametrize("code", ["BucketAlreadyOwnedByYou", "BucketAlreadyExists"])
def test_bucket_creation_tolerates_a_concurrent_creator(
    client: Minio, bucket: str, monkeypatch: pytest.MonkeyPatch, code: str
) -> None:
    store = S3ArtifactStore(client, bucket)

    def lost_the_race(name: str) -> None:  # moto answers 200 in us-east-1, real S3/MinIO an error
        raise S3Error(None, code, "already there", name, "req", "host")  # type: ignore[arg-type]

    monkeypatch.setattr(client, "bucket_exists", lambda name: False)  # we looked before the other won
    monkeypatch.setattr(client, "make_bucket", lost_the_race)
    store.ensure_bucket()


def test_other_bucket_creation_errors_are_reported(
    client: Minio, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(name: str) -> None:
        raise S3Error(None, "AccessDenied", "no", name, "req", "host")  # type: ignore[arg-type]

    monkeypatch.setattr(client, "make_bucket", denied)
    with pytest.raises(ArtifactStoreUnavailable, match="AccessDenied"):
        S3ArtifactStore(client, bucket)


def test_check_fails_when_the_bucket_is_missing(client: Minio, bucket: str) -> None:
    store = S3ArtifactStore(client, bucket, create_bucket=False)
    with pytest.raises(ArtifactStoreUnavailable, match="does not exist"):
        store.check()


def test_unreachable_endpoint_is_unavailable() -> None:
    client = make_minio_client(f"http://127.0.0.1:{free_port()}", "k", "s", "us-east-1", 2.0)
    started = time.monotonic()
    with pytest.raises(ArtifactStoreUnavailable) as info:
        S3ArtifactStore(client, "never", create_bucket=True)
    assert info.value.status_code == 503
    assert info.value.retry_after == 1

    store = S3ArtifactStore(client, "never", create_bucket=False)
    with pytest.raises(ArtifactStoreUnavailable):
        store.check()
    with pytest.raises(ArtifactStoreUnavailable):
        store.put(io.BytesIO(b"data"))
    with pytest.raises(ArtifactStoreUnavailable):
        store.stat("a" * 64)
    assert time.monotonic() - started < 15


def test_transport_errors_while_reading_become_unavailable() -> None:
    class Broken:
        def read(self, size: int) -> bytes:
            raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")

    with pytest.raises(ArtifactStoreUnavailable, match="IncompleteRead"):
        _Body(Broken(), "artifact x").read(10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "host", "https"),
    [
        ("http://127.0.0.1:9000", "127.0.0.1:9000", False),
        ("https://s3.example.com", "s3.example.com", True),
        ("https://minio.internal:9443/", "minio.internal:9443", True),
    ],
)
def test_make_minio_client_parses_the_endpoint(url: str, host: str, https: bool) -> None:
    client = make_minio_client(url, "k", "s", "eu-west-1", 5.0)
    assert client._base_url.host == host
    assert client._base_url.is_https is https
    assert client._base_url.region == "eu-west-1"
    timeout = client._http.connection_pool_kw["timeout"]
    assert (timeout.connect_timeout, timeout.read_timeout) == (5.0, 5.0)
    assert client._http.connection_pool_kw["retries"].total == 2


@pytest.mark.parametrize("url", ["127.0.0.1:9000", "ftp://host", "http://", "http://host/bucket"])
def test_make_minio_client_rejects_bad_endpoints(url: str) -> None:
    with pytest.raises(ValueError):
        make_minio_client(url, "k", "s", "us-east-1", 5.0)
