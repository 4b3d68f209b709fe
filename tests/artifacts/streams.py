"""Readers that generate deterministic content on the fly, and may fail part-way."""

from __future__ import annotations

import hashlib

MiB = 1024 * 1024
_BLOCK = MiB


class GeneratedStream:
    """`size` bytes of deterministic pseudo-random content, never held whole in memory."""

    def __init__(self, size: int, *, seed: bytes = b"seed", fail_after: int | None = None) -> None:
        self.size = size
        self.pos = 0
        self.reads = 0
        self._seed = seed
        self._fail_after = fail_after
        self._cached: tuple[int, bytes] | None = None

    def _block(self, index: int) -> bytes:
        if self._cached is None or self._cached[0] != index:
            digest = hashlib.sha256(self._seed + index.to_bytes(8, "big")).digest()
            self._cached = (index, digest * (_BLOCK // len(digest)))
        return self._cached[1]

    def read(self, n: int | None = -1) -> bytes:
        self.reads += 1
        if self._fail_after is not None and self.pos >= self._fail_after:
            raise OSError(f"client went away after {self.pos} bytes")
        limit = self.size if self._fail_after is None else min(self.size, self._fail_after)
        n = limit - self.pos if n is None or n < 0 else min(n, limit - self.pos)
        out = bytearray()
        while len(out) < n:
            index, offset = divmod(self.pos, _BLOCK)
            take = min(_BLOCK - offset, n - len(out))
            out += self._block(index)[offset : offset + take]
            self.pos += take
        return bytes(out)


def digest_of(size: int, *, seed: bytes = b"seed") -> str:
    """sha256 hex digest of what GeneratedStream(size, seed=seed) yields."""
    stream, sha = GeneratedStream(size, seed=seed), hashlib.sha256()
    while chunk := stream.read(MiB):
        sha.update(chunk)
    return sha.hexdigest()
