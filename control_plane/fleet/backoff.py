"""Exponential backoff per key, so a failing load is retried ever more slowly, never in a tight loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Entry:
    failures: int
    retry_at: float


class Backoff:
    """`initial_s`, doubling per failure up to `max_s`; forgotten on success."""

    def __init__(
        self, *, initial_s: float, max_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self._clock = clock
        self._entries: dict[Hashable, _Entry] = {}
        self._lock = threading.Lock()

    def due(self, key: Hashable) -> bool:
        """Whether `key` may be tried now."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is None or self._clock() >= entry.retry_at

    def failures(self, key: Hashable) -> int:
        """Failures of `key` in a row."""
        with self._lock:
            entry = self._entries.get(key)
            return entry.failures if entry else 0

    def failed(self, key: Hashable) -> float:
        """Count a failure; returns the delay before the next try."""
        with self._lock:
            failures = self._entries[key].failures + 1 if key in self._entries else 1
            delay = float(min(self.initial_s * 2.0 ** (failures - 1), self.max_s))
            self._entries[key] = _Entry(failures, self._clock() + delay)
            return delay

    def succeeded(self, key: Hashable) -> None:
        """Forget the failures of `key`."""
        with self._lock:
            self._entries.pop(key, None)
