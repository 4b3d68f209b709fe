"""Which Tritons this process works with: its own (settings, embedded) and those added through the API.

The registry's instance rows are the fleet. A process's view is the rows of its own instances plus
every row added through `/v1/instances` (other replicas' settings rows are theirs: a second process
with other settings on the same database does not take them over). A row removed (a drain finished)
leaves the view, its endpoint closed; a row whose URL changed gets a new endpoint. Listeners (the
data plane) hear of every change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence

from control_plane.db.models import TritonInstance
from control_plane.fleet.instances import TritonEndpoint

log = logging.getLogger(__name__)
Connect = Callable[[TritonInstance], TritonEndpoint]
Listener = Callable[[list[TritonEndpoint]], None]


class Members:
    """Keeps the shared endpoint list (`tritons`) matching the instance rows in this process's view."""

    def __init__(
        self,
        tritons: list[TritonEndpoint],
        *,
        own: Collection[str] | None = None,
        connect: Connect | None = None,
        fixed: Collection[str] = (),
    ) -> None:
        self.tritons = tritons  # shared with the loader, the status page and the gRPC proxy
        self.own = set(own) if own is not None else {t.name for t in tritons}
        self.connect = connect
        self.fixed = frozenset(fixed)  # URLs this process knows best (the embedded Triton's)
        self.listeners: list[Listener] = []

    def in_view(self, row: TritonInstance) -> bool:
        """Whether this process works with the instance of `row`."""
        return row.name in self.own or (row.origin == "api" and self.connect is not None)

    def sync(self, rows: Sequence[TritonInstance]) -> bool:
        """Add, update or drop endpoints so that they match `rows`; whether anything changed."""
        wanted = {row.name: row for row in rows if self.in_view(row)}
        current = {t.name: t for t in self.tritons}
        fresh: list[TritonEndpoint] = []
        dropped: list[TritonEndpoint] = []
        for name, endpoint in current.items():
            row = wanted.get(name)
            if row is None:
                dropped.append(endpoint)
            elif name not in self.fixed and self.connect is not None and _moved(endpoint, row):
                dropped.append(endpoint)
                fresh.append(self.connect(row))
            else:
                fresh.append(endpoint)
        if self.connect is not None:
            fresh += [self.connect(row) for name, row in wanted.items() if name not in current]
        changed = [(t.name, t.http_url) for t in fresh] != [(t.name, t.http_url) for t in self.tritons]
        if changed:
            self.publish(fresh)
        for endpoint in dropped:
            log.info("instance %s (%s) left this process's fleet", endpoint.name, endpoint.http_url)
            endpoint.close()
        return changed

    def publish(self, endpoints: list[TritonEndpoint] | None = None) -> None:
        """Replace the shared list's contents (in place) and tell the listeners."""
        if endpoints is not None:
            self.tritons[:] = endpoints
        snapshot = list(self.tritons)
        for listener in self.listeners:
            listener(snapshot)

    def drop(self, name: str) -> None:
        """Forget an instance whose row was removed."""
        kept = [t for t in self.tritons if t.name != name]
        gone = [t for t in self.tritons if t.name == name]
        if gone:
            self.publish(kept)
            for endpoint in gone:
                endpoint.close()


def _moved(endpoint: TritonEndpoint, row: TritonInstance) -> bool:
    return (endpoint.http_url, endpoint.grpc_url) != (row.http_url, row.grpc_url)
