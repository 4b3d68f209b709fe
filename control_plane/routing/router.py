"""Resolve tenant + model + alias (or version) to a ready Triton model, from the in-memory table."""

from __future__ import annotations

import logging
import random
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session, sessionmaker

from control_plane.dataplane.contract import Contract
from control_plane.errors import NotFound, ServiceUnavailable
from control_plane.routing.contracts import UNCHECKABLE
from control_plane.routing.table import (
    EMPTY_TABLE,
    SERVABLE,
    AliasTarget,
    RoutingTable,
    build_table,
    load_failed_message,
    ready_placements,
    resident_names,
)

log = logging.getLogger(__name__)
FAILED_RETRY_S = 30  # Retry-After for a version whose load failed (it is not loaded again by itself)
DEFAULT_ALIAS = "production"


class ModelLoading(ServiceUnavailable):
    """The version exists but Triton is not serving it (yet)."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The concrete version a request goes to."""

    tenant: str
    model: str
    version: int
    triton_name: str
    alias: str | None
    shadow: tuple[str, int, int] | None = None  # (triton name, version, percent)
    contract: Contract = UNCHECKABLE

    infer_path: bytes = field(init=False)  # Triton's infer URL path for this version

    def __post_init__(self) -> None:
        object.__setattr__(self, "infer_path", f"/v2/models/{self.triton_name}/infer".encode())


CacheKey = tuple[int, str, str | None, int | None]


class Router:
    """Holds the current RoutingTable; reload() swaps in a fresh one atomically.

    Resolutions that do not depend on the request (no canary draw) are kept per table snapshot, so
    the hot path usually does one dict lookup.
    """

    def __init__(self, session_factory: sessionmaker[Session]):
        self.session_factory = session_factory
        self._snapshot: tuple[RoutingTable, dict[CacheKey, Resolved]] = (EMPTY_TABLE, {})
        self._reload_lock = threading.Lock()
        self._ask_lock = threading.Lock()
        self._asked = 0  # reload() calls so far
        self._built = 0  # the calls the current table covers (all those made before its build began)
        self._asked_placements = 0  # refresh_placements() calls so far
        self._placements_built = 0  # those the current table's placements cover
        self.listeners: list[Callable[[RoutingTable], None]] = []  # told of every reloaded table

    @property
    def table(self) -> RoutingTable:
        """The current snapshot."""
        return self._snapshot[0]

    @table.setter
    def table(self, table: RoutingTable) -> None:
        self._snapshot = (table, {})

    def reload(self) -> None:
        """Rebuild the table from the registry (and tell the listeners). On return the table covers
        every commit made before the call. Calls that arrive while a rebuild runs share the next one:
        a burst of commits (loads, evictions, last uses) costs two rebuilds, not one each."""
        with self._ask_lock:
            self._asked += 1
            ticket = self._asked
        with self._reload_lock:
            if self._built >= ticket:
                return  # a rebuild that began after this call has finished meanwhile
            with self._ask_lock:
                covers, covers_placements = self._asked, self._asked_placements
            with self.session_factory() as session:
                table = build_table(session)
            self._built = covers
            self._placements_built = covers_placements
            self._publish(table)

    def refresh_placements(self) -> None:
        """Only placements' rows changed (a load or an unload): read the table's placements and resident
        set again and keep the rest (a full rebuild reads and parses every version). Coalesced like
        `reload`: every load, eviction and request for a load commits placements, often several at once."""
        with self._ask_lock:
            self._asked_placements += 1
            ticket = self._asked_placements
        with self._reload_lock:
            if self._placements_built >= ticket:
                return  # a refresh or rebuild that began after this call has finished meanwhile
            with self._ask_lock:
                covers = self._asked_placements
            with self.session_factory() as session:
                placements, resident = ready_placements(session), resident_names(session)
            self._placements_built = covers
            self._publish(replace(self.table, placements=placements, resident=resident))

    def _publish(self, table: RoutingTable) -> None:
        """Swap `table` in and tell the listeners (under the reload lock)."""
        self.table = table
        for listener in self.listeners:
            listener(table)

    def resolve(
        self,
        *,
        tenant_id: int,
        model: str,
        alias: str | None = None,
        version: int | None = None,
        routing_key: str | None = None,
    ) -> Resolved:
        """The ready version that serves this request; 404 for unknown names, 503 while loading."""
        table, cache = self._snapshot
        key = (tenant_id, model, alias, version)
        hit = cache.get(key)
        if hit is not None:
            return hit
        target = table.models.get((tenant_id, model))
        if target is None:
            raise NotFound(f"model '{model}' not found")
        shadow = None
        cacheable = True
        if version is None:
            alias = alias or DEFAULT_ALIAS
            alias_target = target.aliases.get(alias)
            if alias_target is None:
                raise NotFound(f"model '{model}' has no alias '{alias}'")
            version = pick_version(alias_target, routing_key)
            cacheable = not alias_target.weighted
            if alias_target.shadow is not None:
                shadow_version = target.versions.get(alias_target.shadow[0])
                if shadow_version is not None and shadow_version.state in SERVABLE:
                    shadow = (shadow_version.triton_name, shadow_version.version, alias_target.shadow[1])
        found = target.versions.get(version)
        if found is None:
            raise NotFound(f"version {version} of model '{model}' not found")
        if found.state == "failed":  # not loaded again until asked for explicitly or replaced
            message = load_failed_message(version, model, found.failure, found.triton_name)
            raise ModelLoading(message, retry_after=FAILED_RETRY_S)
        if found.state not in SERVABLE:
            raise ModelLoading(
                f"version {version} of model '{model}' is {found.state}, not ready", retry_after=2
            )
        resolved = Resolved(
            tenant=target.tenant,
            model=model,
            version=version,
            triton_name=found.triton_name,
            alias=alias,
            shadow=shadow,
            contract=found.contract,
        )
        if cacheable:
            cache[key] = resolved
        return resolved


def pick_version(alias: AliasTarget, routing_key: str | None) -> int:
    """The alias' version, or one drawn from its canary weights (sticky per routing key)."""
    if not alias.weighted:
        return alias.version
    total = sum(weight for _, weight in alias.weighted)
    if total <= 0:
        return alias.version
    point = (zlib.crc32(routing_key.encode()) % total) if routing_key else random.randrange(total)  # noqa: S311
    for version, weight in alias.weighted:
        if point < weight:
            return version
        point -= weight
    return alias.version
