"""Keep the routing table fresh: Postgres LISTEN (other replicas' commits) plus a periodic safety reload."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psycopg

from control_plane.routing.changes import CHANNEL, PLACEMENTS, read_notice
from control_plane.routing.router import Router

log = logging.getLogger(__name__)


class RegistryWatcher:
    """A daemon thread that reloads the router on other processes' NOTIFYs (its own, from `origin`, were
    acted on at commit), only the table's placements when only those changed, or by polling where there
    is no NOTIFY (SQLite); a change to the fleet's desired state also calls `on_desired`."""

    def __init__(
        self,
        *,
        router: Router,
        database_url: str,
        refresh_s: float,
        poll_s: float,
        on_desired: Callable[[], None] | None = None,
        origin: str | None = None,
    ):
        self.router = router
        self.origin = origin
        self.on_desired = on_desired
        self.database_url = database_url
        self.refresh_s = refresh_s
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cp-registry-watcher", daemon=True)

    @property
    def listens(self) -> bool:
        """True on Postgres, where NOTIFY carries changes between processes."""
        return self.database_url.startswith(("postgresql", "postgres"))

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (returns within about a second)."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.listens:
                    self._listen()
                else:
                    self._stop.wait(self.poll_s)
                    self.router.reload()
            except Exception:  # keep the replica serving from its last table; retry shortly
                log.exception("registry watcher failed; retrying")
                self._stop.wait(1.0)

    def _listen(self) -> None:
        conninfo = "postgresql://" + self.database_url.split("://", 1)[1]
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.router.reload()  # after LISTEN, so no change between the two is missed
            last_reload = time.monotonic()
            while not self._stop.is_set():
                payloads = [n.payload for n in conn.notifies(timeout=0.5, stop_after=1)]
                if payloads:  # coalesce a burst into one reload
                    payloads += [n.payload for n in conn.notifies(timeout=0.005)]
                notices = [n for n in map(read_notice, payloads) if n.origin != self.origin]
                rebuild = any(n.kind != PLACEMENTS for n in notices)
                if rebuild or time.monotonic() - last_reload > self.refresh_s:
                    self.router.reload()
                    last_reload = time.monotonic()
                elif notices:
                    self.router.refresh_placements()
                if any(n.desired for n in notices) and self.on_desired is not None:
                    self.on_desired()
