"""Artifact store in a local directory (the embedded default)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from control_plane.artifacts.base import (
    CHUNK_SIZE,
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_PREFIX = re.compile(r"[0-9a-f]{2}")


def _entries(path: Path) -> list[os.DirEntry[str]]:
    """The directory's entries in name order (none if it is gone)."""
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda entry: entry.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _unavailable(path, exc) from exc


def _is(test: Callable[[], bool]) -> bool:
    """`DirEntry.is_dir`/`is_file` (following links): False for a dangling link or a vanished entry."""
    try:
        return test()
    except OSError:
        return False


def _unavailable(path: Path, exc: OSError) -> ArtifactStoreUnavailable:
    return ArtifactStoreUnavailable(f"artifact directory: cannot read {path}: {exc.strerror}")


class LocalArtifactStore(ArtifactStore):
    """Artifacts as files `root/sha256/ab/<hex>`, written through `root/tmp/` and renamed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        (self.root / "sha256").mkdir(exist_ok=True)

    def _path(self, sha256: str) -> Path:
        return self.root / content_key(sha256)

    def put(self, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        """Hash into a temp file, fsync, then rename into place (or keep the existing copy)."""
        reader = HashingReader(stream, max_bytes=max_bytes)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := reader.read(CHUNK_SIZE):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._promote(tmp, sha256=reader.sha256, size=reader.size)
        finally:
            tmp.unlink(missing_ok=True)

    def _promote(self, tmp: Path, *, sha256: str, size: int) -> StoredArtifact:
        dest = self._path(sha256)
        if dest.is_file() and dest.stat().st_size == size:
            return StoredArtifact(uri=self.uri_for(sha256), sha256=sha256, size_bytes=size)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        return StoredArtifact(uri=self.uri_for(sha256), sha256=sha256, size_bytes=size)

    @contextmanager
    def open(self, sha256: str) -> Iterator[ArtifactReader]:
        """Read the file, verifying sha256 and size when the reader reaches EOF."""
        try:
            file = self._path(sha256).open("rb")
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"artifact {sha256} not found") from exc
        with file:
            size = os.fstat(file.fileno()).st_size
            yield ArtifactReader(file, sha256=sha256, size_bytes=size)

    def exists(self, sha256: str) -> bool:
        """Whether the file exists."""
        return self._path(sha256).is_file()

    def stat(self, sha256: str) -> StoredArtifact:
        """Size of the file; ArtifactNotFound if missing."""
        try:
            size = self._path(sha256).stat().st_size
        except FileNotFoundError as exc:
            raise ArtifactNotFound(f"artifact {sha256} not found") from exc
        return StoredArtifact(uri=self.uri_for(sha256), sha256=sha256, size_bytes=size)

    def delete(self, sha256: str) -> None:
        """Remove the file if present."""
        self._path(sha256).unlink(missing_ok=True)

    def read_owner(self) -> str | None:
        """The marker file's text; None when there is none."""
        path = self.root / OWNER_KEY
        try:
            with path.open("rb") as marker:
                return marker.read(MAX_OWNER_BYTES + 1).decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _unavailable(path, exc) from exc

    def write_owner(self, registry_id: str) -> None:
        """Write the marker file (through a temp file and a rename)."""
        path = self.root / OWNER_KEY
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(registry_id)
            os.replace(tmp, path)
        except OSError as exc:
            raise _unavailable(path, exc) from exc

    def listing(self) -> Iterator[ListedArtifact]:
        """The files `sha256/ab/<hex>`, directory by directory in name order (which is the hex's); links are
        followed, as `open` and `exists` follow them."""
        for prefix in _entries(self.root / "sha256"):
            if not (_PREFIX.fullmatch(prefix.name) and _is(prefix.is_dir)):
                continue
            for entry in _entries(Path(prefix.path)):
                sha256 = sha256_of_key(f"sha256/{prefix.name}/{entry.name}")
                if sha256 is None or not _is(entry.is_file):
                    continue
                try:
                    stat = entry.stat()
                except FileNotFoundError:  # deleted since the directory was read
                    continue
                except OSError as exc:
                    raise _unavailable(Path(entry.path), exc) from exc
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                yield ListedArtifact(sha256=sha256, size_bytes=stat.st_size, modified=modified)

    def remove_leftovers(self, older_than: datetime) -> int:
        """`put`'s temp files (`tmp/upload-*`) that no upload renamed or removed (its process ended)."""
        removed = 0
        for entry in _entries(self.tmp_dir):
            if not entry.name.startswith("upload-"):
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < older_than.timestamp():
                    Path(entry.path).unlink()
                    removed += 1
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _unavailable(Path(entry.path), exc) from exc
        return removed

    def check(self) -> None:
        """Raise ArtifactStoreUnavailable unless the directory exists and is writable."""
        if not self.tmp_dir.is_dir() or not os.access(self.tmp_dir, os.W_OK | os.X_OK):
            raise ArtifactStoreUnavailable(f"artifact directory {self.root} is not writable")

    def uri_for(self, sha256: str) -> str:
        """`file:///.../sha256/ab/<hex>`."""
        return self._path(sha256).as_uri()
