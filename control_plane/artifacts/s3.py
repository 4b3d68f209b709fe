"""Artifact store on an S3-compatible server (MinIO, moto), through the minio SDK."""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, ComposeSource, CopySource
from minio.datatypes import Upload
from minio.error import MinioException, S3Error
from minio.helpers import MAX_PART_SIZE, DictType

from control_plane.artifacts.base import (
    MAX_OWNER_BYTES,
    OWNER_KEY,
    ArtifactReader,
    ArtifactStore,
    HashingReader,
    ListedArtifact,
    StoredArtifact,
    content_key,
    sha256_of_key,
)
from control_plane.artifacts.exceptions import ArtifactNotFound, ArtifactStoreUnavailable

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# put_object(length=-1) holds about three parts at once (the previous part, the new read, and its
# one-byte-shorter slice), so 8 MiB parts keep an upload near 35 MB of RSS; 16 MiB parts reach ~65 MB.
DEFAULT_PART_SIZE = 8 * MiB
UPLOAD_PREFIX = "uploads/"
_UPLOAD_NAME = re.compile(r"uploads/[0-9a-f]{32}")  # `put`'s temp objects; others under uploads/ are not ours
CONTENT_PREFIX = "sha256/"
SHA256_META = "x-amz-meta-sha256"
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})


def make_minio_client(
    endpoint_url: str, access_key: str, secret_key: str, region: str, timeout_s: float
) -> Minio:
    """A minio client for `http(s)://host[:port]` with explicit timeouts and few retries."""
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"S3 endpoint must look like http(s)://host[:port], got {endpoint_url!r}")
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=certifi.where(),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        parts.netloc,
        access_key=access_key,
        secret_key=secret_key,
        secure=parts.scheme == "https",
        region=region,
        http_client=http,
    )


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn minio/urllib3 errors into artifact errors."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _NOT_FOUND_CODES:
            raise ArtifactNotFound(f"{what} not found") from exc
        raise ArtifactStoreUnavailable(f"S3 refused {what}: {exc.code}: {exc.message}") from exc
    except (MinioException, urllib3.exceptions.HTTPError) as exc:
        raise ArtifactStoreUnavailable(f"S3 does not answer for {what}: {exc}") from exc


class _Body:
    """An object's HTTP body whose transport errors come out as artifact errors."""

    def __init__(self, response: urllib3.BaseHTTPResponse, what: str) -> None:
        self._response = response
        self._what = what

    def read(self, size: int, /) -> bytes:
        with _translated(self._what):
            return self._response.read(size)


class S3ArtifactStore(ArtifactStore):
    """Artifacts as objects `sha256/ab/<hex>` in one bucket, uploaded multipart in constant memory."""

    # Uploads in parallel threads hold more parts in memory, and minio leaks the worker threads
    # of a failed upload, so the default is one part at a time.
    def __init__(
        self,
        client: Minio,
        bucket: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        parallel_uploads: int = 1,
        create_bucket: bool = True,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._part_size = part_size
        self._parallel_uploads = parallel_uploads
        self.copy_limit = MAX_PART_SIZE  # above this size a server-side copy must be a compose
        if create_bucket:
            self.ensure_bucket()

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (tolerating a concurrent creator)."""
        with _translated(f"bucket {self._bucket}"):
            if self._client.bucket_exists(self._bucket):
                return
            try:
                self._client.make_bucket(self._bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def put(self, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        """Upload to `uploads/<uuid>`, then server-side copy to the content-addressed key."""
        reader = HashingReader(stream, max_bytes=max_bytes)
        tmp = f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
        try:
            with _translated(f"upload {tmp}"):
                self._client.put_object(
                    self._bucket,
                    tmp,
                    reader,  # type: ignore[arg-type]
                    length=-1,
                    part_size=self._part_size,
                    num_parallel_uploads=self._parallel_uploads,
                )
                return self._promote(tmp, sha256=reader.sha256, size=reader.size)
        except BaseException:
            self._abort_uploads(tmp)
            raise
        finally:
            self._remove_quietly(tmp)

    def _promote(self, tmp: str, *, sha256: str, size: int) -> StoredArtifact:
        existing = self._stat_or_none(sha256)
        if existing is not None and existing.size_bytes == size:
            return existing
        key = content_key(sha256)
        metadata: DictType = {SHA256_META: sha256}
        if size > self.copy_limit:
            sources = [ComposeSource(self._bucket, tmp)]
            self._client.compose_object(self._bucket, key, sources, metadata=metadata)
        else:
            source = CopySource(self._bucket, tmp)
            self._client.copy_object(self._bucket, key, source, metadata=metadata, metadata_directive=REPLACE)
        return StoredArtifact(uri=self.uri_for(sha256), sha256=sha256, size_bytes=size)

    def _abort_uploads(self, key: str) -> None:
        # minio aborts its own multipart upload on error, but that abort itself may fail; sweep again.
        try:
            for upload in self._multipart_uploads(key):
                if upload.object_name == key and upload.upload_id:
                    self._client._abort_multipart_upload(self._bucket, key, upload.upload_id)
        except Exception:
            log.warning("could not abort multipart uploads of %s/%s", self._bucket, key, exc_info=True)

    def _remove_quietly(self, key: str) -> None:
        try:
            self._client.remove_object(self._bucket, key)
        except Exception:
            log.warning("could not remove %s/%s", self._bucket, key, exc_info=True)

    @contextmanager
    def open(self, sha256: str) -> Iterator[ArtifactReader]:
        """Stream the object, verifying sha256 and size when the reader reaches EOF."""
        stored = self.stat(sha256)
        what = f"artifact {sha256}"
        with _translated(what):
            response = self._client.get_object(self._bucket, content_key(sha256))
        try:
            yield ArtifactReader(_Body(response, what), sha256=sha256, size_bytes=stored.size_bytes)
        finally:
            response.close()
            response.release_conn()

    def exists(self, sha256: str) -> bool:
        """Whether the object exists."""
        return self._stat_or_none(sha256) is not None

    def stat(self, sha256: str) -> StoredArtifact:
        """Size from the object's metadata; ArtifactNotFound if missing."""
        with _translated(f"artifact {sha256}"):
            obj = self._client.stat_object(self._bucket, content_key(sha256))
        return StoredArtifact(uri=self.uri_for(sha256), sha256=sha256, size_bytes=int(obj.size or 0))

    def _stat_or_none(self, sha256: str) -> StoredArtifact | None:
        try:
            return self.stat(sha256)
        except ArtifactNotFound:
            return None

    def delete(self, sha256: str) -> None:
        """Remove the object (S3 deletes are idempotent)."""
        with _translated(f"artifact {sha256}"):
            self._client.remove_object(self._bucket, content_key(sha256))

    def read_owner(self) -> str | None:
        """The marker object's text; None when there is none."""
        try:
            with _translated(f"marker {OWNER_KEY}"):
                response = self._client.get_object(self._bucket, OWNER_KEY)
                try:
                    data = response.read(MAX_OWNER_BYTES + 1)
                finally:
                    response.close()
                    response.release_conn()
        except ArtifactNotFound:
            return None
        return data.decode("utf-8", "replace").strip()

    def write_owner(self, registry_id: str) -> None:
        """Write the marker object."""
        data = registry_id.encode()
        with _translated(f"marker {OWNER_KEY}"):
            self._client.put_object(self._bucket, OWNER_KEY, io.BytesIO(data), len(data))

    def listing(self) -> Iterator[ListedArtifact]:
        """The objects under `sha256/` (S3 lists keys in ascending order, and a key's order is its hex's)."""
        with _translated(f"listing of bucket {self._bucket}"):
            for obj in self._client.list_objects(self._bucket, prefix=CONTENT_PREFIX, recursive=True):
                sha256 = sha256_of_key(obj.object_name or "")
                if sha256 is not None:
                    modified = obj.last_modified or datetime.now(UTC)
                    yield ListedArtifact(sha256=sha256, size_bytes=int(obj.size or 0), modified=modified)

    def remove_leftovers(self, older_than: datetime) -> int:
        """`put`'s temp objects (`uploads/<32 hex>`) that no upload promoted or removed, and multipart
        uploads of such names neither completed nor aborted (their process ended meanwhile; the store bills
        their parts). Other objects under `uploads/` are not ours, and are left alone."""
        removed = 0
        with _translated(f"listing of bucket {self._bucket}"):
            stale = [
                obj.object_name
                for obj in self._client.list_objects(self._bucket, prefix=UPLOAD_PREFIX, recursive=True)
                if _UPLOAD_NAME.fullmatch(obj.object_name or "")
                and obj.last_modified is not None
                and obj.last_modified < older_than
            ]
        for key in stale:
            with _translated(f"leftover {key}"):
                self._client.remove_object(self._bucket, key)
            removed += 1
        with _translated(f"multipart uploads of bucket {self._bucket}"):
            abandoned = [
                (upload.object_name, upload.upload_id)
                for upload in self._multipart_uploads(UPLOAD_PREFIX)
                if _UPLOAD_NAME.fullmatch(upload.object_name)
                and upload.upload_id
                and upload.initiated_time
                and upload.initiated_time < older_than
            ]
        for key, upload_id in abandoned:
            with _translated(f"multipart upload of {key}"):
                self._client._abort_multipart_upload(self._bucket, key, upload_id)
            removed += 1
        return removed

    def _multipart_uploads(self, prefix: str) -> Iterator[Upload]:
        """Multipart uploads under `prefix` neither completed nor aborted, page after page."""
        key_marker: str | None = None
        upload_id_marker: str | None = None
        while True:
            result = self._client._list_multipart_uploads(
                self._bucket, prefix=prefix, key_marker=key_marker, upload_id_marker=upload_id_marker
            )
            yield from result.uploads
            if not result.is_truncated or not result.next_key_marker:
                return
            key_marker, upload_id_marker = result.next_key_marker, result.next_upload_id_marker

    def check(self) -> None:
        """Raise ArtifactStoreUnavailable unless the bucket answers."""
        with _translated(f"bucket {self._bucket}"):
            if not self._client.bucket_exists(self._bucket):
                raise ArtifactStoreUnavailable(f"bucket {self._bucket} does not exist")

    def uri_for(self, sha256: str) -> str:
        """`s3://<bucket>/sha256/ab/<hex>`."""
        return f"s3://{self._bucket}/{content_key(sha256)}"
