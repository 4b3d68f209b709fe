"""The artifact store interface, and the hashing/verifying stream wrappers its backends share."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from control_plane.artifacts.exceptions import ArtifactCorrupted, ArtifactTooLarge

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

CHUNK_SIZE = 1024 * 1024
OWNER_KEY = "control-plane/registry-id"  # the marker naming the registry a store belongs to
MAX_OWNER_BYTES = 64
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class Readable(Protocol):
    """Anything with a `read(n)` that returns bytes (files, HTTP responses)."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class StoredArtifact:
    """One stored, content-addressed artifact."""

    uri: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class ListedArtifact:
    """One artifact as a listing of the store finds it."""

    sha256: str
    size_bytes: int
    modified: datetime  # aware, UTC


def validate_sha256(sha256: str) -> str:
    """Return `sha256` if it is 64 lowercase hex characters, else raise ValueError."""
    if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


def content_key(sha256: str) -> str:
    """The relative key (object name or path) of an artifact: `sha256/ab/<hex>`."""
    validate_sha256(sha256)
    return f"sha256/{sha256[:2]}/{sha256}"


def sha256_of_key(key: str) -> str | None:
    """The sha256 whose content key (`sha256/ab/<hex>`) `key` is, else None (not an artifact)."""
    sha256 = key.rsplit("/", 1)[-1]
    return sha256 if _SHA256_RE.fullmatch(sha256) and key == content_key(sha256) else None


class HashingReader:
    """Pass-through reader that hashes and counts what it reads, and enforces a byte limit."""

    def __init__(self, stream: Readable, *, max_bytes: int | None = None) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int | None = CHUNK_SIZE, /) -> bytes:
        """Read up to `size` bytes from the wrapped stream."""
        if size is None or size < 0:
            size = CHUNK_SIZE
        if self._max_bytes is not None:  # one byte past the limit is enough to know it is exceeded
            size = max(1, min(size, self._max_bytes + 1 - self.size))
        data = self._stream.read(size)
        self.size += len(data)
        if self._max_bytes is not None and self.size > self._max_bytes:
            raise ArtifactTooLarge(f"artifact is larger than {self._max_bytes} bytes")
        self._hash.update(data)
        return data

    @property
    def sha256(self) -> str:
        """Hex digest of everything read so far."""
        return self._hash.hexdigest()


class ArtifactReader(io.RawIOBase):
    """Reader over stored bytes that raises ArtifactCorrupted at EOF if sha256 or size differ."""

    def __init__(self, source: Readable, *, sha256: str, size_bytes: int) -> None:
        super().__init__()
        self._source = source
        self._expected_sha256 = sha256
        self._expected_size = size_bytes
        self._hash = hashlib.sha256()
        self._size = 0
        self._verified = False

    def readable(self) -> bool:
        """Always true."""
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        """Read up to `size` bytes (all remaining if negative), verifying at EOF."""
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_SIZE), b""))
        if self._verified or size == 0:
            return b""
        data = self._source.read(size)
        self._size += len(data)
        self._hash.update(data)
        if self._size > self._expected_size:
            raise ArtifactCorrupted(f"artifact {self._expected_sha256} is longer than {self._expected_size}")
        if not data:
            self._verify()
        return data

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Read into `buffer`, verifying at EOF."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _verify(self) -> None:
        digest = self._hash.hexdigest()
        if self._size != self._expected_size or digest != self._expected_sha256:
            raise ArtifactCorrupted(
                f"artifact {self._expected_sha256} is corrupted: read {self._size} bytes "
                f"with sha256 {digest}, expected {self._expected_size} bytes"
            )
        self._verified = True


class ArtifactStore(ABC):
    """Content-addressed blob store keyed by sha256; every method is blocking."""

    @abstractmethod
    def put(self, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        """Stream `stream` into the store; idempotent for equal content; leaves nothing on failure."""

    @abstractmethod
    def open(self, sha256: str) -> AbstractContextManager[ArtifactReader]:
        """A reader over the artifact that raises ArtifactCorrupted at EOF on mismatch."""

    @abstractmethod
    def exists(self, sha256: str) -> bool:
        """Whether the artifact is stored."""

    @abstractmethod
    def stat(self, sha256: str) -> StoredArtifact:
        """Metadata of a stored artifact; ArtifactNotFound if missing."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the artifact; no error if it is already gone."""

    @abstractmethod
    def read_owner(self) -> str | None:
        """The id of the registry the store belongs to (its marker, `OWNER_KEY`); None: not marked yet."""

    @abstractmethod
    def write_owner(self, registry_id: str) -> None:
        """Mark the store as the registry's."""

    @abstractmethod
    def listing(self) -> Iterator[ListedArtifact]:
        """Every stored artifact, in ascending sha256 order (what is not an artifact's key is skipped)."""

    @abstractmethod
    def remove_leftovers(self, older_than: datetime) -> int:
        """Remove what uploads left behind (their process ended) from before `older_than`; how many."""

    @abstractmethod
    def check(self) -> None:
        """Raise ArtifactStoreUnavailable if the backend does not answer."""

    @abstractmethod
    def uri_for(self, sha256: str) -> str:
        """The URI under which the artifact is (or would be) stored."""

    def download_to(self, sha256: str, path: Path) -> None:
        """Copy the artifact to `path` atomically, verified; no file is left on failure."""
        path = Path(path)
        with self.open(sha256) as reader:
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(reader, out, CHUNK_SIZE)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp_name, path)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
