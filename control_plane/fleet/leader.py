"""Leadership of a background loop across control-plane replicas: a Postgres advisory lock."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


def is_postgres(database_url: str) -> bool:
    """Whether the registry is Postgres (else SQLite: one process, always the leader)."""
    return database_url.startswith(("postgresql", "postgres"))


class LeaderLease:
    """A session-level advisory lock held by a connection of its own: the leader is whoever holds it.

    The lock goes with the connection, so a replica that dies or loses its database connection
    hands leadership over without anyone releasing anything.
    """

    def __init__(self, database_url: str, key: int, *, timeout_s: float = 10.0) -> None:
        self.key = key
        self._postgres = is_postgres(database_url)
        self._conninfo = "postgresql://" + database_url.split("://", 1)[1]
        # A leader that dies closes its connection at once (the kernel does); one that hangs or is cut
        # off is found out by TCP keepalives and the user timeout within about `timeout_s`, and the
        # server then drops its lock. The leader itself gives up as soon as a query on it fails.
        self._options: dict[str, Any] = {
            "connect_timeout": max(1, int(timeout_s / 2)),
            "keepalives": 1,
            "keepalives_idle": max(1, int(timeout_s / 3)),
            "keepalives_interval": max(1, int(timeout_s / 6)),
            "keepalives_count": 2,
            "tcp_user_timeout": int(timeout_s * 1000),
        }
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def acquire(self) -> bool:
        """Whether this process is the leader now (taking the lock if it is free)."""
        if not self._postgres:
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._conninfo, autocommit=True, **self._options)
                self._server_keepalives(self._conn)
            # Asking again while holding it is harmless (session locks stack; all go with the connection).
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            log.warning("leader lock %#x unavailable: %s", self.key, exc)
            self.release()
            return False
        return bool(row and row[0])

    def _server_keepalives(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        """The same keepalives on the server's side, which is what frees the lock of a lost leader."""
        o = self._options
        for setting, value in (
            ("tcp_keepalives_idle", o["keepalives_idle"]),
            ("tcp_keepalives_interval", o["keepalives_interval"]),
            ("tcp_keepalives_count", o["keepalives_count"]),
            ("tcp_user_timeout", o["tcp_user_timeout"]),
        ):
            conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(setting), sql.Literal(value)))

    def held(self) -> bool:
        """Whether this process holds the lock now: its connection alive and the lock granted to it (a
        connection cut off, or ended by the server, has lost it, and another may hold it)."""
        if not self._postgres:
            return True
        if self._conn is None or self._conn.closed:
            return False
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF  # pg_locks splits a bigint key
        try:
            row = self._conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid() AND classid = %s::oid AND objid = %s::oid AND objsubid = 1)",
                (high, low),
            ).fetchone()
        except psycopg.Error as exc:
            log.warning("leader lock %#x lost: %s", self.key, exc)
            self.release()
            return False
        return bool(row and row[0])

    def release(self) -> None:
        """Give up leadership: unlocked at once, then the connection closed (which alone would release it
        only once the server has ended its backend, a moment after the close returns)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            if not conn.closed and not conn.broken:  # a lost connection is not waited on: its lock is gone
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(psycopg.Error):
                conn.close()


class LeaderLoop:
    """Runs `work` on a daemon thread every `interval_s` (with `first_now`, once at start too) when this
    replica holds `lease`, taken before each run and given up on `stop`. A run that fails is logged, and the
    next comes an interval later. `stopping` is set by `stop`, for work that checks it as it goes."""

    def __init__(
        self,
        work: Callable[[], object],
        *,
        name: str,
        interval_s: float,
        lease: LeaderLease,
        first_now: bool = False,
    ) -> None:
        self.work = work
        self.name = name
        self.interval_s = interval_s
        self.lease = lease
        self.first_now = first_now
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a run under way ends when it sees `stopping`); give up the lease."""
        self.stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.lease.release()

    def _run(self) -> None:
        if self.first_now:
            self._once()
        while not self.stopping.wait(self.interval_s):
            self._once()

    def _once(self) -> None:
        try:
            if self.lease.acquire():
                self.work()
        except Exception:
            log.exception("%s failed; the next run in %g s", self.name, self.interval_s)
