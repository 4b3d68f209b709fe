"""Build the model repository named by `CP_MODEL_REPOSITORY`: a folder or Triton's `s3://` form."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from control_plane.artifacts import make_minio_client
from control_plane.modelrepo.base import ModelRepository
from control_plane.modelrepo.folder import FolderModelRepository
from control_plane.modelrepo.s3 import S3ModelRepository
from control_plane.settings import Settings


@dataclass(frozen=True)
class S3Location:
    """The parts of `s3://[http(s)://host:port/]bucket[/prefix]`."""

    endpoint_url: str | None
    bucket: str
    prefix: str


def parse_s3_repository(location: str) -> S3Location:
    """Split Triton's S3 repository URL; without an endpoint, the S3 endpoint from settings is used."""
    rest = location.removeprefix("s3://")
    endpoint_url = None
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            host, _, rest = rest[len(scheme) :].partition("/")
            endpoint_url = f"{scheme}{host}"
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"S3 model repository needs a bucket: {location!r}")
    return S3Location(endpoint_url=endpoint_url, bucket=bucket, prefix=prefix.strip("/"))


def build_model_repository(settings: Settings) -> ModelRepository:
    """The repository writer for the configured location."""
    location = settings.model_repository
    if not location.startswith("s3://"):
        return FolderModelRepository(Path(location))
    parts = parse_s3_repository(location)
    client = make_minio_client(
        parts.endpoint_url or settings.s3_endpoint,
        settings.s3_access_key.get_secret_value(),
        settings.s3_secret_key.get_secret_value(),
        settings.s3_region,
        settings.s3_timeout_s,
    )
    repository = S3ModelRepository(client, bucket=parts.bucket, prefix=parts.prefix, location=location)
    repository.ensure_bucket()
    return repository
