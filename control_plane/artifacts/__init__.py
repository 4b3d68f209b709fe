"""Content-addressed artifact storage: S3 (minio SDK) or a local directory."""

from control_plane.artifacts.base import ArtifactReader, ArtifactStore, StoredArtifact, validate_sha256
from control_plane.artifacts.exceptions import (
    ArtifactCorrupted,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStoreUnavailable,
    ArtifactTooLarge,
)
from control_plane.artifacts.factory import build_artifact_store
from control_plane.artifacts.local import LocalArtifactStore
from control_plane.artifacts.s3 import S3ArtifactStore, make_minio_client

__all__ = [
    "ArtifactCorrupted",
    "ArtifactError",
    "ArtifactNotFound",
    "ArtifactReader",
    "ArtifactStore",
    "ArtifactStoreUnavailable",
    "ArtifactTooLarge",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "StoredArtifact",
    "build_artifact_store",
    "make_minio_client",
    "validate_sha256",
]
