"""Where each servable version should run: on `replicas` instances of its model, spread, and sticky.

A pure function of what is servable, where versions are placed now and which instances may hold
them, so the policy is tested without a database or a Triton:

- a version stays where it is while that instance keeps placements (ready, or unavailable for less
  than the move delay; never a draining one);
- a version with fewer placements than its target gets the instances with the fewest placements,
  then the fewest bytes placed (the most free capacity), among the eligible ones (ready, not draining);
- a version with more than its target loses the placements on the busiest instances, those on
  unavailable instances first.

The target is `replicas`, at most the number of instances that may hold placements.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Slot:
    """An instance as the policy sees it."""

    name: str
    eligible: bool  # may take new placements: ready and not draining
    keeps: bool  # keeps the placements it has: eligible, or down for less than the move delay


@dataclass(frozen=True, slots=True)
class Servable:
    """A version that should be served, with its model's replicas and its size."""

    version_id: int
    replicas: int
    size_bytes: int = 0


class _Load:
    """Placements and bytes per instance, as the plan grows."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        self.count = {s.name: 0 for s in slots}
        self.bytes = {s.name: 0 for s in slots}

    def add(self, name: str, size: int) -> None:
        self.count[name] += 1
        self.bytes[name] += size

    def remove(self, name: str, size: int) -> None:
        self.count[name] -= 1
        self.bytes[name] -= size

    def key(self, name: str) -> tuple[int, int, str]:
        return (self.count[name], self.bytes[name], name)


def plan(
    servable: Sequence[Servable],
    current: Mapping[int, Collection[str]],
    slots: Sequence[Slot],
    *,
    base: Iterable[tuple[str, int]] = (),
) -> dict[int, frozenset[str]]:
    """The instances each servable version should be on (see the module docstring).

    `base`: (instance, bytes) of placements outside `servable` that count towards each instance's load.
    """
    keepers = {s.name for s in slots if s.keeps}
    eligible = [s.name for s in slots if s.eligible and s.keeps]
    by_name = {s.name: s for s in slots}
    load = _Load(slots)
    for name, size in base:
        if name in load.count:
            load.add(name, size)
    ordered = sorted(servable, key=lambda s: s.version_id)
    kept: dict[int, list[str]] = {}
    for version in ordered:
        kept[version.version_id] = [n for n in sorted(current.get(version.version_id, ())) if n in keepers]
        for name in kept[version.version_id]:
            load.add(name, version.size_bytes)
    desired: dict[int, frozenset[str]] = {}
    for version in ordered:
        target = min(version.replicas, len(keepers))
        chosen = kept[version.version_id]
        while len(chosen) > target:  # replicas lowered: leave the unavailable, then the busiest
            drop = max(chosen, key=lambda n: (not by_name[n].eligible, *load.key(n)))
            chosen.remove(drop)
            load.remove(drop, version.size_bytes)
        free = [n for n in eligible if n not in chosen]
        while len(chosen) < target and free:
            pick = min(free, key=load.key)
            free.remove(pick)
            chosen.append(pick)
            load.add(pick, version.size_bytes)
        desired[version.version_id] = frozenset(chosen)
    return desired
