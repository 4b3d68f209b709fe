"""Per-tenant limits on the management API: a request rate and a cap on requests in flight.

Management requests of every tenant share one process's threads, one pool of database connections and one
temporary disk (upload bodies are spooled there). A tenant's burst of slow uploads, or of `/load` calls each
waiting minutes for a load, would hold all of them, and every other tenant's management requests would
queue behind it. So each tenant gets `CP_API_TENANT_MAX_CONCURRENCY` requests in flight and
`CP_API_TENANT_RATE_LIMIT` per second (with `CP_API_TENANT_BURST`), counted per replica as the data plane's
limits are; past either, a 429 with Retry-After, before the body is read.

The caller's tenant comes from the data plane's in-memory key table (no query): the key's hash must match,
so nobody can spend another tenant's allowance with a key prefix read from the audit log. Admins (the
bootstrap token and admin keys) are not limited: they are the operators. A key the table does not know goes
on to the endpoint, whose own check answers 401; consumer and expired keys, which the endpoint refuses, are
not counted either. The console's requests count as the signed-in key's. Inference (`/v1/predict`, `/v2`)
has its own limits.

The cap is per tenant, not a reservation: several tenants busy at once can still hold every thread between
them (five at 8 fill the 40). It keeps one tenant from starving the rest; size it below the threads and
the request pool divided by the tenants expected to be busy at once. Calls that wait for loads, the longest,
run on threads of their own (`dependencies.waiting_for_loads`), whatever their tenants.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.auth.principal import Principal, Role
from control_plane.dataplane.auth import key_entry
from control_plane.dataplane.limits import RateLimited, TenantLimits
from control_plane.errors import Unauthorized, error_response
from control_plane.keys.secrets import is_secret
from control_plane.middleware import bearer_in
from control_plane.routing.table import RoutingTable
from control_plane.settings import Settings


class ApiThrottle:
    """The management API's per-tenant limits, and the count of what they refused."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.limits = TenantLimits(
            rate_per_s=settings.api_tenant_rate_limit,
            burst=settings.api_tenant_burst,
            max_concurrency=settings.api_tenant_max_concurrency,
            noun="management API request",
        )
        self.refused = Counter(
            "cp_api_throttled",
            "Management API requests refused (429) by a tenant's rate or in-flight limit",
            ("tenant", "reason"),
            registry=registry,
        )
        self._lock = threading.Lock()

    def admit(self, tenant_id: int, tenant: str) -> None:
        """Take a slot and a token of the tenant's (give the slot back with `release`), or RateLimited. The
        slot first: a request refused for want of one spends no token, so a client retrying while its
        slots are taken is not then refused for its rate."""
        with self._lock:  # the middleware on the event loop, the console's dependency on worker threads
            try:
                self.limits.acquire(tenant_id)
            except RateLimited:
                self.refused.labels(tenant, "concurrency").inc()
                raise
            try:
                self.limits.check_rate(tenant_id)
            except BaseException as exc:
                self.limits.release(tenant_id)
                if isinstance(exc, RateLimited):
                    self.refused.labels(tenant, "rate").inc()
                raise

    def release(self, tenant_id: int) -> None:
        """Give back the slot `admit` took."""
        with self._lock:
            self.limits.release(tenant_id)

    @contextmanager
    def held(self, principal: Principal, table: RoutingTable) -> Iterator[None]:
        """`admit` for the length of a block, for a caller already authenticated (the console's); admins
        and a tenant the table does not know yet are not limited."""
        tenant_id = principal.tenant_id
        name = table.tenants.get(tenant_id) if tenant_id is not None and not principal.is_admin else None
        if tenant_id is None or name is None:
            yield
            return
        self.admit(tenant_id, name)
        try:
            yield
        finally:
            self.release(tenant_id)


def tenant_of(table: RoutingTable, token: str | None, admin_token: str | None) -> tuple[int, str] | None:
    """The (id, name) of the tenant whose key `token` is; None for an admin, and for no key, a key the table
    does not know, a consumer key or an expired one: the endpoint refuses those, and their holders (an
    application, a former holder) must not use up the tenant's allowance, trickling a body in to hold a
    slot while its publishers are refused."""
    if token is None or is_secret(token, admin_token):
        return None
    try:
        entry = key_entry(table, token)  # the data plane's check: hash, revocation, expiry
    except Unauthorized:
        return None
    if entry.tenant_id is None or entry.role == Role.CONSUMER.value:
        return None  # an admin key; a consumer key, which the endpoint refuses (403) whatever it sends
    name = table.tenants.get(entry.tenant_id)
    return None if name is None else (entry.tenant_id, name)


class ApiThrottleMiddleware:
    """Applies `ApiThrottle` to every `/v1` request (inference apart) for its whole life, body included. The
    console's requests are held by its sign-in dependency (`console/auth.py`). Mounted under a `root_path`,
    paths would not start with `/v1/`: `control-plane serve` sets none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = getattr(scope["app"].state, "cp", None) if scope["type"] == "http" else None
        if state is None or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        admin_token = state.settings.admin_token
        caller = tenant_of(
            state.router.table,
            bearer_in(scope),
            admin_token.get_secret_value() if admin_token is not None else None,
        )
        if caller is None:
            await self.app(scope, receive, send)
            return
        tenant_id, tenant = caller
        try:
            state.api_throttle.admit(tenant_id, tenant)
        except RateLimited as exc:
            await error_response(exc)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            state.api_throttle.release(tenant_id)
