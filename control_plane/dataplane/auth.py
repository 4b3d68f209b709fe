"""Authenticate inference callers from the in-memory key table: no database query per request."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from control_plane.errors import Forbidden, NotFound, Unauthorized
from control_plane.keys import repository as keys
from control_plane.keys.secrets import is_secret, matches, prefix_of
from control_plane.keys.service import expired_message
from control_plane.routing.table import KeyEntry, RoutingTable

log = logging.getLogger(__name__)


class Caller(NamedTuple):
    """Who is inferring, for which tenant (a tuple: made once per request, cheaply)."""

    tenant_id: int
    tenant: str
    key_id: int | None


def parse_bearer(header: str | None) -> str:
    """The token from an `Authorization: Bearer <key>` value (gRPC metadata may omit 'Bearer')."""
    if not header:
        raise Unauthorized("missing Authorization header; expected 'Bearer <key>'")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else header.strip()
    if not token:
        raise Unauthorized("missing API key")
    return token


def authenticate(
    table: RoutingTable, *, authorization: str | None, tenant_header: str | None, admin_token: str | None
) -> Caller:
    """The caller's tenant: from its key, or for admins from the `X-Tenant` header."""
    token = parse_bearer(authorization)
    if is_secret(token, admin_token):
        return _admin_caller(table, tenant_header, key_id=None)
    entry = key_entry(table, token)
    if entry.tenant_id is None:
        return _admin_caller(table, tenant_header, key_id=entry.key_id)
    return Caller(tenant_id=entry.tenant_id, tenant=table.tenants[entry.tenant_id], key_id=entry.key_id)


def require_key(table: RoutingTable, *, authorization: str | None, admin_token: str | None) -> None:
    """Any valid key (of any role, or the bootstrap admin key); 401 otherwise."""
    token = parse_bearer(authorization)
    if not is_secret(token, admin_token):
        key_entry(table, token)


def authorize_metrics(
    table: RoutingTable, *, authorization: str | None, admin_token: str | None, metrics_token: str | None
) -> None:
    """/metrics names every tenant's models: only the metrics token or an admin key may read it."""
    token = parse_bearer(authorization)
    if is_secret(token, metrics_token) or is_secret(token, admin_token):
        return
    if key_entry(table, token).role != "admin":
        raise Forbidden("/metrics needs an admin key or the metrics token")


def key_entry(table: RoutingTable, token: str) -> KeyEntry:
    """The table's entry of a valid, unexpired key; Unauthorized (saying which) otherwise."""
    prefix = prefix_of(token)
    entry = table.keys.get(prefix) if prefix else None
    if entry is None or not matches(token, entry.key_hash):
        raise Unauthorized("invalid or revoked API key")
    expires_at = entry.expires_at
    if expires_at is not None and expires_at <= time.time():
        raise Unauthorized(expired_message(datetime.fromtimestamp(expires_at, UTC)))
    return entry


def _admin_caller(table: RoutingTable, tenant_header: str | None, *, key_id: int | None) -> Caller:
    tenant_id = table.tenant_ids.get(tenant_header or "")
    if tenant_id is None:
        raise NotFound(
            "admin keys infer on behalf of a tenant: set the X-Tenant header (gRPC: x-tenant metadata) to an "
            "existing tenant"
        )
    return Caller(tenant_id=tenant_id, tenant=table.tenants[tenant_id], key_id=key_id)


class KeyUsage:
    """Remembers when each key was last used and writes it to the database in batches, not per request."""

    def __init__(self, session_factory: sessionmaker[Session], *, flush_every_s: float = 30.0):
        self.session_factory = session_factory
        self.flush_every_s = flush_every_s
        self._seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cp-key-usage", daemon=True)

    def touch(self, key_id: int | None) -> None:
        """Note a use of the key (a dict write)."""
        if key_id is not None:
            self._seen[key_id] = time.time()

    def start(self) -> None:
        """Start the periodic flush."""
        self._thread.start()

    def stop(self) -> None:
        """Flush once more and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.flush()

    def flush(self) -> None:
        """Write the collected last-used times."""
        seen, self._seen = self._seen, {}
        if not seen:
            return
        with self.session_factory() as session, session.begin():
            keys.record_last_used(
                session, {key_id: datetime.fromtimestamp(when, tz=UTC) for key_id, when in seen.items()}
            )

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            try:
                self.flush()
            except Exception:  # the next flush retries with newer times
                log.warning("writing keys' last_used_at failed", exc_info=True)
