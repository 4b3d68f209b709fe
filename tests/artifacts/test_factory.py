"""build_artifact_store picks and configures the backend the settings name."""

from __future__ import annotations

import io
from pathlib import Path

from minio import Minio
from pydantic import SecretStr

from control_plane.artifacts import LocalArtifactStore, S3ArtifactStore, build_artifact_store
from control_plane.settings import ArtifactBackend, Settings
from tests.conftest import S3_ACCESS_KEY, S3_SECRET_KEY


def test_local_backend(tmp_path: Path) -> None:
    store = build_artifact_store(Settings(artifact_store=ArtifactBackend.LOCAL, artifact_dir=tmp_path / "a"))
    assert isinstance(store, LocalArtifactStore)
    assert store.root == tmp_path / "a"
    store.check()


def test_s3_backend(s3_endpoint: str, bucket: str, minio_client: Minio) -> None:
    settings = Settings(
        artifact_store=ArtifactBackend.S3,
        s3_endpoint=s3_endpoint,
        s3_access_key=SecretStr(S3_ACCESS_KEY),
        s3_secret_key=SecretStr(S3_SECRET_KEY),
        s3_bucket=bucket,
        s3_timeout_s=5.0,
    )
    store = build_artifact_store(settings)

    assert isinstance(store, S3ArtifactStore)
    assert minio_client.bucket_exists(bucket)
    stored = store.put(io.BytesIO(b"via settings"))
    assert stored.uri.startswith(f"s3://{bucket}/sha256/")
    store.check()
