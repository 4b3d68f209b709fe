"""Engine and session factory built from settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event, update
from sqlalchemy.orm import Session, sessionmaker

from control_plane.db import hooks


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain `postgresql://` URLs."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(
    url: str, *, pool_size: int = 10, pool_timeout_s: float = 30.0, foreign_keys: bool = True
) -> Engine:
    """An engine for Postgres (psycopg 3) or SQLite, with foreign keys enforced on SQLite (unless not
    `foreign_keys`: migrations rebuild tables, which would fire ON DELETE actions). A checkout that finds
    every connection of the pool (`pool_size` plus as many again) busy for `pool_timeout_s` raises
    SQLAlchemy's TimeoutError. Postgres sessions are in UTC whatever the server's zone: timestamps come
    back as UTC (one far in the future, read in a zone east of UTC, would not fit a datetime)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas if foreign_keys else _sqlite_journal)
        return engine
    engine = create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=pool_timeout_s, pool_pre_ping=True
    )
    event.listen(engine, "connect", _postgres_utc)
    return engine


def _postgres_utc(dbapi_connection: object, _: object) -> None:
    # Outside a transaction, so that no rollback undoes it.
    autocommit = dbapi_connection.autocommit  # type: ignore[attr-defined]
    dbapi_connection.autocommit = True  # type: ignore[attr-defined]
    try:
        dbapi_connection.execute("SET TIME ZONE 'UTC'")  # type: ignore[attr-defined]
    finally:
        dbapi_connection.autocommit = autocommit  # type: ignore[attr-defined]


def _sqlite_journal(dbapi_connection: object, _: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_pragmas(dbapi_connection: object, record: object) -> None:
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    _sqlite_journal(dbapi_connection, record)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits on success and rolls back on any error, running the hooks. The work
    may end its transaction itself (a promote does, to hold nothing while its version loads) and go on in
    a new one: what is open at the end is committed."""
    with factory() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            hooks.rolled_back(session)
            raise
        hooks.committed(session)


def sqlite_write_lock(session: Session, table: Any, row_id: int) -> bool:
    """On SQLite, which ignores row locks (`FOR UPDATE`), take the database's write lock with a write that
    changes nothing (`table`'s row `row_id`), held to the commit: what the transaction reads after it is
    current, and transactions doing the same go one at a time, as a row lock makes them on Postgres (where
    this does nothing). Only where nothing slow follows before the commit: held across a Triton load, it
    would stall the loader's own writes, every other writer's too. Whether it took it (SQLite)."""
    if session.get_bind().dialect.name != "sqlite":
        return False
    session.execute(update(table).where(table.id == row_id).values(id=table.id))
    return True
