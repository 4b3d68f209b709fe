"""Model repository writers against a real folder and the real S3-compatible server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from control_plane.errors import InvalidRequest
from control_plane.modelrepo import (
    FolderModelRepository,
    ModelRepository,
    RepositoryFile,
    S3ModelRepository,
    parse_s3_repository,
)


@pytest.fixture(params=["folder", "s3"])
def repository(
    request: pytest.FixtureRequest, tmp_path: Path, minio_client: Minio, bucket: str, s3_endpoint: str
) -> Iterator[ModelRepository]:
    if request.param == "folder":
        yield FolderModelRepository(tmp_path / "repo")
        return
    repo = S3ModelRepository(
        minio_client, bucket=bucket, prefix="models/v1", location=f"s3://{s3_endpoint}/{bucket}/models/v1"
    )
    repo.ensure_bucket()
    yield repo


def _read(repo: ModelRepository, name: str, relative: str) -> bytes:
    if isinstance(repo, FolderModelRepository):
        return (repo.root / name / relative).read_bytes()
    assert isinstance(repo, S3ModelRepository)
    response = repo.client.get_object(repo.bucket, f"{repo.prefix}/{name}/{relative}")
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


def test_write_list_overwrite_remove(repository: ModelRepository, tmp_path: Path) -> None:
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"\x08\x07onnx-bytes")
    files = [
        RepositoryFile("1/model.onnx", source=artifact),
        RepositoryFile("1/model.py", content=b"# runner"),
    ]
    repository.write_model("acme--m--1--v1", config_text='name: "acme--m--1--v1"', files=files)

    assert repository.has_model("acme--m--1--v1")
    assert repository.list_models() == ["acme--m--1--v1"]
    assert _read(repository, "acme--m--1--v1", "1/model.onnx") == b"\x08\x07onnx-bytes"
    assert _read(repository, "acme--m--1--v1", "1/model.py") == b"# runner"
    assert _read(repository, "acme--m--1--v1", "config.pbtxt") == b'name: "acme--m--1--v1"'

    repository.write_model("acme--m--1--v1", config_text="max_batch_size: 4", files=files[1:])
    assert _read(repository, "acme--m--1--v1", "config.pbtxt") == b"max_batch_size: 4"

    repository.remove_model("acme--m--1--v1")
    repository.remove_model("acme--m--1--v1")  # idempotent
    assert not repository.has_model("acme--m--1--v1")
    assert repository.list_models() == []


@pytest.mark.parametrize("name", ["../x", "a/b", "", "A B", ".hidden", "x" * 201])
def test_unsafe_model_names_rejected(repository: ModelRepository, name: str) -> None:
    with pytest.raises(InvalidRequest):
        repository.write_model(name, config_text="", files=[])


@pytest.mark.parametrize("relative", ["../escape", "/abs/path", "1/../../x", "1//x"])
def test_unsafe_file_paths_rejected(repository: ModelRepository, relative: str) -> None:
    with pytest.raises(InvalidRequest):
        repository.write_model("ok--m--1--v1", config_text="", files=[RepositoryFile(relative, content=b"")])
    assert not repository.has_model("ok--m--1--v1")


def test_folder_write_failure_leaves_no_directory(tmp_path: Path) -> None:
    repo = FolderModelRepository(tmp_path / "repo")
    missing = RepositoryFile("1/model.onnx", source=tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError):
        repo.write_model("acme--m--1--v1", config_text="x", files=[missing])
    assert list((tmp_path / "repo").iterdir()) == []


@pytest.mark.parametrize(
    ("location", "endpoint", "bucket", "prefix"),
    [
        ("s3://http://127.0.0.1:9000/models/triton", "http://127.0.0.1:9000", "models", "triton"),
        ("s3://https://s3.example.com/b", "https://s3.example.com", "b", ""),
        ("s3://bucket/a/b/", None, "bucket", "a/b"),
    ],
)
def test_parse_s3_repository(location: str, endpoint: str | None, bucket: str, prefix: str) -> None:
    parsed = parse_s3_repository(location)
    assert (parsed.endpoint_url, parsed.bucket, parsed.prefix) == (endpoint, bucket, prefix)


def test_parse_s3_repository_needs_bucket() -> None:
    with pytest.raises(ValueError, match="bucket"):
        parse_s3_repository("s3://http://host:9000/")
