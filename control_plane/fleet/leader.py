"""Leadership of a background loop across control-plane replicas: a Postgres advisory lock."""

from __future__ import annotations

import contextlib
import logging

import psycopg

log = logging.getLogger(__name__)


def is_postgres(database_url: str) -> bool:
    """Whether the registry is Postgres (else SQLite: one process, always the leader)."""
    return database_url.startswith(("postgresql", "postgres"))


class LeaderLease:
    """A session-level advisory lock held by a connection of its own: the leader is whoever holds it.

    The lock goes with the connection, so a replica that dies or loses its database connection
    hands leadership over without anyone releasing anything.
    """

    def __init__(self, database_url: str, key: int, *, connect_timeout_s: int = 5) -> None:
        self.key = key
        self._postgres = is_postgres(database_url)
        self._conninfo = "postgresql://" + database_url.split("://", 1)[1]
        self._connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None

    def acquire(self) -> bool:
        """Whether this process is the leader now (taking the lock if it is free)."""
        if not self._postgres:
            return True
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._conninfo, autocommit=True, connect_timeout=self._connect_timeout_s
                )
            # Asking again while holding it is harmless (session locks stack; all go with the connection).
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
        except psycopg.Error as exc:
            log.warning("leader lock %#x unavailable: %s", self.key, exc)
            self.release()
            return False
        return bool(row and row[0])

    def release(self) -> None:
        """Give up leadership (closing the connection releases the lock)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()
