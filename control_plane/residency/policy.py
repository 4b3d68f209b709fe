"""Which versions an instance keeps within its memory budget: a pure function, tested without Triton.

- Resident versions (loaded or loading there) and incoming ones (desired there, not loaded yet) have a
  size (measured, else estimated), a tenant, a last use, and flags: pinned, busy (requests in flight).
- Incoming versions are admitted pinned first, then in the order they were asked for (which of them a pass
  considers at all, when load workers are short, is the budget step's choice: those most requests wait
  for). One that does not fit makes room by evicting idle, unpinned resident versions: first those
  nobody used since `idle_before` (least recently used first: memory nobody uses is no tenant's to
  keep), then those of tenants holding more than their share of the budget, counting the incoming
  version with its tenant (the tenant furthest over first), then least recently used. A version
  admitted in the same round is never a victim.
- If even evicting every evictable version would not make room, nothing is evicted for it: it waits.
  A pinned set the budget cannot hold is reported (pinned versions waiting, or resident over a budget
  lowered under them), never evicted.
- Resident versions over the budget with nothing incoming (a size measured larger than estimated) are
  evicted the same way until the rest fits; with `headroom`, until that much is free, so the next cold
  version can start loading at once instead of waiting for an eviction (the budget still holds).
- Each eviction has a reason (`REASONS`, the label of `cp_residency_evictions_total`): made room for an
  incoming version as an `idle` one, a `tenant_share` one (only where the share chose another victim than
  least recently used would) or the `lru` one; or shrank what is resident, `over_budget` (measured bigger
  than counted) or for the `headroom`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Why a version was evicted: the order that chose it to make room (`_order`), or a shrink.
IDLE, TENANT_SHARE, LRU, OVER_BUDGET, HEADROOM = "idle", "tenant_share", "lru", "over_budget", "headroom"
REASONS = (IDLE, TENANT_SHARE, LRU, OVER_BUDGET, HEADROOM)
_BY_RANK = (IDLE, TENANT_SHARE, LRU)


@dataclass(frozen=True, slots=True)
class Entry:
    """A version on (or for) one instance, as the policy sees it."""

    version_id: int
    tenant: str
    size: int
    last_used: float = 0.0  # wall-clock seconds; for incoming versions: when it was asked for
    pinned: bool = False
    busy: bool = False  # requests in flight on this instance


@dataclass
class Decision:
    """What to do on one instance."""

    admit: list[int] = field(default_factory=list)  # incoming versions that may load now
    evict: list[int] = field(default_factory=list)  # resident versions to unload first
    reasons: dict[int, str] = field(default_factory=dict)  # evicted version id -> one of REASONS
    wait: list[int] = field(default_factory=list)  # incoming versions with no room now
    pinned_over: int = 0  # bytes of pinned versions the budget cannot hold


def decide(
    resident: Sequence[Entry],
    incoming: Sequence[Entry],
    *,
    budget: int,
    share: float | None = None,
    headroom: int = 0,
    idle_before: float | None = None,
) -> Decision:
    """Admit, evict and defer so that the sum of sizes never exceeds `budget` (module docstring)."""
    decision = Decision()
    held = {e.version_id: e for e in resident}
    tenant_bytes: dict[str, int] = {}
    for entry in resident:
        tenant_bytes[entry.tenant] = tenant_bytes.get(entry.tenant, 0) + entry.size
    used = sum(e.size for e in resident)
    protected: set[int] = set()
    limit = None if share is None else share * budget
    for entry in sorted(incoming, key=lambda e: (not e.pinned, e.last_used, e.version_id)):
        # Shares as they would be with it admitted: a tenant that its new version takes over its share
        # makes room from its own versions first, not from a tenant within its share.
        arriving = {**tenant_bytes, entry.tenant: tenant_bytes.get(entry.tenant, 0) + entry.size}
        victims = _victims(
            held, protected, arriving, need=used + entry.size - budget, limit=limit, idle_before=idle_before
        )
        if victims is None:
            decision.wait.append(entry.version_id)
            if entry.pinned:
                decision.pinned_over += entry.size
            continue
        for victim, reason in victims:
            used -= victim.size
            tenant_bytes[victim.tenant] -= victim.size
            del held[victim.version_id]
            decision.evict.append(victim.version_id)
            decision.reasons[victim.version_id] = reason
        held[entry.version_id] = entry
        protected.add(entry.version_id)
        used += entry.size
        tenant_bytes[entry.tenant] = tenant_bytes.get(entry.tenant, 0) + entry.size
        decision.admit.append(entry.version_id)
    # Pinned versions over the budget are reported whether they wait or are resident already (a budget
    # lowered under them: they are never evicted, so the budget is exceeded until it is raised).
    pinned = sum(e.size for e in (*resident, *incoming) if e.pinned)
    decision.pinned_over = max(decision.pinned_over, pinned - budget)
    target = budget - headroom if budget > 2 * headroom else budget
    if used > target:  # measured bigger than estimated, or room kept ahead for the next load: shrink
        victims = _victims(
            held,
            protected,
            tenant_bytes,
            need=used - target,
            limit=limit,
            idle_before=idle_before,
            partial=True,
        )
        for victim, _ in victims or ():
            del held[victim.version_id]
            decision.evict.append(victim.version_id)
            decision.reasons[victim.version_id] = OVER_BUDGET if used > budget else HEADROOM
            used -= victim.size
    return decision


def _victims(
    held: dict[int, Entry],
    protected: set[int],
    tenant_bytes: dict[str, int],
    *,
    need: int,
    limit: float | None,
    idle_before: float | None = None,
    partial: bool = False,
) -> list[tuple[Entry, str]] | None:
    """Versions to evict to free `need` bytes, each with the reason its rank in the order gives (None if
    impossible; with `partial`, as many as can go)."""
    if need <= 0:
        return []
    free = [e for e in held.values() if not e.pinned and not e.busy and e.version_id not in protected]
    if not partial and sum(e.size for e in free) < need:
        return None
    chosen: list[tuple[Entry, str]] = []
    over = dict(tenant_bytes)
    while need > 0 and free:
        victim = min(free, key=lambda e: _order(e, over, limit, idle_before))
        reason = _BY_RANK[_order(victim, over, limit, idle_before)[0]]
        if reason == TENANT_SHARE and victim is min(free, key=lambda e: _order(e, over, None, idle_before)):
            reason = LRU  # the share changed nothing (one tenant, or its version was the LRU one anyway)
        free.remove(victim)
        chosen.append((victim, reason))
        over[victim.tenant] -= victim.size
        need -= victim.size
    return chosen


def _order(
    entry: Entry, tenant_bytes: dict[str, int], limit: float | None, idle_before: float | None
) -> tuple[int, float, float, int]:
    """Eviction order: versions idle since before `idle_before` first, then tenants over their share
    (furthest over first), then least recently used."""
    if idle_before is not None and entry.last_used < idle_before:
        return (0, 0.0, entry.last_used, entry.version_id)
    excess = 0.0 if limit is None else tenant_bytes.get(entry.tenant, 0) - limit
    if excess > 0:
        return (1, -excess, entry.last_used, entry.version_id)
    return (2, 0.0, entry.last_used, entry.version_id)
