"""Both artifact-store backends behind one fixture, with helpers to tamper with and inspect them."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from control_plane.artifacts import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from control_plane.artifacts.base import content_key
from tests.artifacts.streams import MiB


@dataclass
class Backend:
    """A store plus backdoor access to what it keeps."""

    name: str
    store: ArtifactStore
    client: Minio | None = None
    bucket: str = ""
    root: Path | None = None

    def overwrite(self, sha256: str, data: bytes) -> None:
        """Replace the stored bytes behind the store's back."""
        if self.client is not None:
            self.client.put_object(self.bucket, content_key(sha256), io.BytesIO(data), len(data))
        else:
            assert self.root is not None
            (self.root / content_key(sha256)).write_bytes(data)

    def keys(self) -> list[str]:
        """Every stored object/file, temp ones included."""
        if self.client is not None:
            return sorted(o.object_name or "" for o in self.client.list_objects(self.bucket, recursive=True))
        assert self.root is not None
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())

    def incomplete_uploads(self) -> list[str]:
        """Multipart uploads started and neither completed nor aborted (S3 only)."""
        if self.client is None:
            return []
        result = self.client._list_multipart_uploads(self.bucket)
        return [f"{u.object_name}:{u.upload_id}" for u in result.uploads]

    def leftovers(self) -> list[str]:
        """Everything a failed upload could have left behind."""
        return self.keys() + self.incomplete_uploads()


@pytest.fixture(params=["s3", "local"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each store implementation, fresh and empty (S3 with 5 MiB parts so multipart really happens)."""
    if request.param == "s3":
        client: Minio = request.getfixturevalue("minio_client")
        bucket: str = request.getfixturevalue("bucket")
        store = S3ArtifactStore(client, bucket, part_size=5 * MiB)
        return Backend("s3", store, client=client, bucket=bucket)
    root = tmp_path / "artifacts"
    return Backend("local", LocalArtifactStore(root), root=root)
