"""The shared pieces: sha256 validation, hashing and verifying readers, error statuses."""

from __future__ import annotations

import hashlib
import io

import pytest

from control_plane.artifacts import (
    ArtifactCorrupted,
    ArtifactError,
    ArtifactNotFound,
    ArtifactReader,
    ArtifactStore,
    ArtifactStoreUnavailable,
    ArtifactTooLarge,
    validate_sha256,
)
from control_plane.artifacts.base import HashingReader, content_key
from control_plane.errors import AppError, error_response

DATA = b"some model bytes" * 100
SHA = hashlib.sha256(DATA).hexdigest()


def _reader(data: bytes, *, size: int = len(DATA), sha: str = SHA) -> ArtifactReader:
    return ArtifactReader(io.BytesIO(data), sha256=sha, size_bytes=size)


def test_content_key() -> None:
    assert content_key(SHA) == f"sha256/{SHA[:2]}/{SHA}"
    assert validate_sha256(SHA) == SHA
    with pytest.raises(ValueError):
        content_key(SHA.upper())
    with pytest.raises(ValueError):
        validate_sha256(SHA + "\n")


def test_reader_passes_intact_data() -> None:
    reader = _reader(DATA)
    assert reader.read(100) + reader.read() == DATA
    assert reader.read(1) == b""


def test_reader_supports_readinto_and_io_buffering() -> None:
    assert io.BufferedReader(_reader(DATA), buffer_size=64).read() == DATA


@pytest.mark.parametrize(
    ("data", "size"),
    [(DATA[:-1], len(DATA)), (DATA + b"!", len(DATA)), (DATA[:-1] + b"?", len(DATA)), (DATA, len(DATA) + 1)],
)
def test_reader_detects_mismatch(data: bytes, size: int) -> None:
    reader = _reader(data, size=size)
    with pytest.raises(ArtifactCorrupted):
        while reader.read(7):
            pass


def test_reader_flags_overlong_data_before_eof() -> None:
    reader = _reader(DATA + b"extra", size=len(DATA))
    reader.read(len(DATA))
    with pytest.raises(ArtifactCorrupted, match="longer"):
        reader.read(1)


def test_hashing_reader_counts_hashes_and_limits() -> None:
    reader = HashingReader(io.BytesIO(DATA), max_bytes=len(DATA))
    while reader.read(33):
        pass
    assert (reader.sha256, reader.size) == (SHA, len(DATA))

    limited = HashingReader(io.BytesIO(DATA), max_bytes=len(DATA) - 1)
    with pytest.raises(ArtifactTooLarge):
        while limited.read(10_000):
            pass
    assert limited.size == len(DATA)  # never read further than one byte past the limit


@pytest.mark.parametrize(
    ("exc", "status", "kind", "parent"),
    [
        (ArtifactNotFound("x"), 404, "NotFound", ArtifactError),
        (ArtifactCorrupted("x"), 502, "ArtifactCorrupted", ArtifactError),
        (ArtifactTooLarge("x"), 413, "PayloadTooLarge", ArtifactError),
        (ArtifactStoreUnavailable("x"), 503, "ServiceUnavailable", ArtifactError),
    ],
)
def test_errors_carry_their_http_status(exc: AppError, status: int, kind: str, parent: type) -> None:
    assert isinstance(exc, parent) and isinstance(exc, AppError)
    response = error_response(exc)
    assert response.status_code == status
    assert response.body == f'{{"error":"{kind}","detail":"x"}}'.encode()


def test_unavailable_sets_retry_after() -> None:
    assert error_response(ArtifactStoreUnavailable("down")).headers["Retry-After"] == "1"


def test_interface_is_abstract() -> None:
    with pytest.raises(TypeError):
        ArtifactStore()  # type: ignore[abstract]
