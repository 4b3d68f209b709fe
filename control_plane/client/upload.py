"""A streamed multipart/form-data body: files are read in chunks as the connection sends them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024
# Called with (bytes of the files sent so far, total bytes of the files).
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FilePart:
    """One file field of the form."""

    field: str
    path: Path

    def head(self, boundary: str) -> bytes:
        """The part's boundary line and headers."""
        filename = self.path.name.replace("\\", "_").replace('"', "%22").replace("\r", "").replace("\n", "")
        return (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{self.field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()


class MultipartBody:
    """The body, its Content-Type and Content-Length, known before anything is read."""

    def __init__(self, parts: list[FilePart], *, progress: Progress | None = None):
        self.parts = parts
        self.progress = progress
        self.boundary = uuid.uuid4().hex
        self.sizes = [os.stat(p.path).st_size for p in parts]
        self.total_files = sum(self.sizes)
        self.tail = f"--{self.boundary}--\r\n".encode()

    @property
    def headers(self) -> dict[str, str]:
        """Content-Type (with the boundary) and Content-Length."""
        length = sum(len(p.head(self.boundary)) + 2 for p in self.parts) + self.total_files + len(self.tail)
        return {
            "Content-Type": f"multipart/form-data; boundary={self.boundary}",
            "Content-Length": str(length),
        }

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        if self.progress is not None:
            self.progress(0, self.total_files)
        for part, size in zip(self.parts, self.sizes, strict=True):
            yield part.head(self.boundary)
            with part.path.open("rb") as f:
                left = size
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        raise OSError(f"{part.path} shrank while it was being uploaded")
                    left -= len(chunk)
                    sent += len(chunk)
                    yield chunk
                    if self.progress is not None:
                        self.progress(sent, self.total_files)
            yield b"\r\n"
        yield self.tail
