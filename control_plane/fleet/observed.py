"""What the reconcile loop last observed, kept in memory for /v1/status, the instances API and metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from control_plane.fleet.metrics import FleetStats

Key = tuple[str, int]  # (instance name, version id)


@dataclass(frozen=True)
class InstanceObservation:
    """One instance as the last pass saw it."""

    name: str
    ready: bool
    checked_at: datetime
    models: Mapping[str, str]  # Triton model name -> state in its repository index (READY, LOADING, ...)
    message: str | None = None
    probed_at: float = 0.0  # time.monotonic() when the probe started


@dataclass(frozen=True)
class PlacementFailure:
    """A version that failed to load on an instance, and when the loop tries again."""

    instance: str
    triton_name: str
    message: str
    retry_in_s: float


@dataclass
class Observed:
    """The loop's latest view; plain attribute reads are safe from any thread."""

    instances: dict[str, InstanceObservation] = field(default_factory=dict)
    failures: dict[Key, PlacementFailure] = field(default_factory=dict)
    drift: dict[str, int] = field(default_factory=dict)  # instance -> placements not as desired
    leader: bool = False
    last_pass_at: datetime | None = None
    last_pass_s: float | None = None
    stats: FleetStats = field(default_factory=FleetStats)
    _placements: dict[Key, tuple[str, str | None]] = field(default_factory=dict)
    _placed_at: dict[Key, float] = field(default_factory=dict)  # when each was recorded (time.monotonic())
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def passed(self, at: datetime, seconds: float) -> None:
        """Note that a pass finished, and how long it took."""
        self.last_pass_at, self.last_pass_s = at, seconds
        self.stats.passed(seconds)

    def placement_changed(self, key: Key, state: str, message: str | None) -> bool:
        """Remember a placement's state; whether it differs from what was remembered."""
        with self._lock:
            changed = self._placements.get(key) != (state, message)
            self._placements[key] = (state, message)
            self._placed_at[key] = time.monotonic()
            return changed

    def placement_recorded_since(self, key: Key, since: float) -> bool:
        """Whether the placement's state was recorded at or after `since` (time.monotonic(); 0: never)."""
        with self._lock:
            return since > 0 and self._placed_at.get(key, float("-inf")) >= since

    def placement_state(self, key: Key) -> str | None:
        """The state last recorded for a placement by this process."""
        with self._lock:
            remembered = self._placements.get(key)
            return None if remembered is None else remembered[0]

    def forget(self, instance: str) -> None:
        """Drop what is known about an instance that left the fleet."""
        self.instances.pop(instance, None)
        self.drift.pop(instance, None)
        self.stats.forget(instance)
        with self._lock:
            for key in [k for k in self._placements if k[0] == instance]:
                del self._placements[key]
                self._placed_at.pop(key, None)
        for key in [k for k in self.failures if k[0] == instance]:
            self.failures.pop(key, None)

    def instance_ready(self, name: str) -> bool:
        """Whether the last pass found instance `name` ready (False if never probed)."""
        seen = self.instances.get(name)
        return seen is not None and seen.ready

    def model_ready(self, instance: str, triton_name: str) -> bool:
        """Whether the last pass saw `triton_name` loaded and ready on `instance`."""
        seen = self.instances.get(instance)
        return seen is not None and seen.ready and seen.models.get(triton_name) == "READY"
