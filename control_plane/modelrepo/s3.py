"""A model repository under an S3 prefix, written through the minio SDK."""

from __future__ import annotations

import io

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error
from urllib3.exceptions import HTTPError

from control_plane.errors import ServiceUnavailable
from control_plane.modelrepo.base import (
    ModelRepository,
    RepositoryFile,
    check_model_name,
    check_relative_path,
)

# Triton rejects a repository prefix with no object under it; this one keeps it "a directory".
MARKER = ".control-plane"


class S3ModelRepository(ModelRepository):
    """`s3://<endpoint>/<bucket>/<prefix>/<name>/config.pbtxt` and `.../<name>/1/...`."""

    def __init__(self, client: Minio, *, bucket: str, prefix: str, location: str):
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._location = location

    @property
    def location(self) -> str:
        """The `s3://` URL Triton reads."""
        return self._location

    def ensure_bucket(self) -> None:
        """Create the bucket if missing, and a marker so Triton sees the (empty) prefix as a directory."""
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
            self.client.put_object(self.bucket, self._marker_key(), io.BytesIO(b""), 0)
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise ServiceUnavailable(f"model repository bucket: {exc.code}") from exc
        except HTTPError as exc:
            raise ServiceUnavailable(f"model repository unreachable: {exc}") from exc

    def _marker_key(self) -> str:
        return f"{self.prefix}/{MARKER}" if self.prefix else MARKER

    def _key(self, name: str, relative: str = "") -> str:
        base = f"{self.prefix}/{name}" if self.prefix else name
        return f"{base}/{relative}" if relative else f"{base}/"

    def write_model(self, name: str, *, config_text: str, files: list[RepositoryFile]) -> None:
        """Upload the files, then config.pbtxt last, so a listed model always has its files."""
        check_model_name(name)
        try:
            for item in files:
                key = self._key(name, str(check_relative_path(item.relative_path)))
                if item.source is not None:
                    self.client.fput_object(self.bucket, key, str(item.source))
                else:
                    data = item.content or b""
                    self.client.put_object(self.bucket, key, io.BytesIO(data), len(data))
            config = config_text.encode()
            self.client.put_object(
                self.bucket, self._key(name, "config.pbtxt"), io.BytesIO(config), len(config)
            )
        except (S3Error, HTTPError) as exc:
            self.remove_model(name)
            raise ServiceUnavailable(f"writing model {name} to the repository failed: {exc}") from exc

    def remove_model(self, name: str) -> None:
        """Delete every object under the model's prefix."""
        prefix = self._key(check_model_name(name))
        try:
            objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=True)
            deletes = [DeleteObject(o.object_name) for o in objects if o.object_name]
            for error in self.client.remove_objects(self.bucket, deletes):
                raise ServiceUnavailable(f"removing {error.name} failed: {error.message}")
        except (S3Error, HTTPError) as exc:
            raise ServiceUnavailable(f"removing model {name} failed: {exc}") from exc

    def has_model(self, name: str) -> bool:
        """Whether the model's config.pbtxt exists."""
        try:
            self.client.stat_object(self.bucket, self._key(check_model_name(name), "config.pbtxt"))
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound"):
                return False
            raise ServiceUnavailable(f"model repository: {exc.code}") from exc
        return True

    def list_models(self) -> list[str]:
        """Model 'directories' directly under the prefix."""
        prefix = f"{self.prefix}/" if self.prefix else ""
        objects = self.client.list_objects(self.bucket, prefix=prefix, recursive=False)
        return sorted(o.object_name[len(prefix) :].rstrip("/") for o in objects if o.is_dir)
