"""Build the configured artifact store from settings."""

from __future__ import annotations

from control_plane.artifacts.base import ArtifactStore
from control_plane.artifacts.local import LocalArtifactStore
from control_plane.artifacts.s3 import S3ArtifactStore, make_minio_client
from control_plane.settings import ArtifactBackend, Settings


def build_artifact_store(settings: Settings) -> ArtifactStore:
    """The artifact store `settings.artifact_store` names (S3: the bucket is created if missing)."""
    if settings.artifact_store is ArtifactBackend.S3:
        client = make_minio_client(
            settings.s3_endpoint,
            settings.s3_access_key.get_secret_value(),
            settings.s3_secret_key.get_secret_value(),
            settings.s3_region,
            settings.s3_timeout_s,
        )
        return S3ArtifactStore(client, settings.s3_bucket)
    return LocalArtifactStore(settings.artifact_dir)
