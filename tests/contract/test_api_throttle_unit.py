"""Which callers the management API's limits count, from the in-memory key table alone: a tenant's publisher
key whose hash matches; not admins, consumers, expired keys, forged ones or unknown ones."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry

from control_plane.auth.dependencies import bearer_of
from control_plane.dataplane.limits import MAX_WAIT_S, RateLimited, TenantLimits
from control_plane.keys.secrets import generate
from control_plane.routing.table import KeyEntry, RoutingTable
from control_plane.settings import Settings
from control_plane.tenants.throttle import ApiThrottle, tenant_of

ADMIN_TOKEN = "bootstrap-admin-token"


def table_with(**roles: tuple[str, int | None, float | None]) -> tuple[RoutingTable, dict[str, str]]:
    """A table holding one key per name (role, tenant id, expiry), and each key's secret by name."""
    keys, secrets = {}, {}
    for n, (name, (role, tenant_id, expires_at)) in enumerate(roles.items()):
        made = generate()
        keys[made.prefix] = KeyEntry(
            key_id=n,
            key_hash=made.key_hash,
            role=role,
            tenant_id=tenant_id,
            prefix=made.prefix,
            expires_at=expires_at,
        )
        secrets[name] = made.plaintext
    table = RoutingTable(models={}, tenants={7: "acme"}, tenant_ids={"acme": 7}, keys=keys)
    return table, secrets


TABLE, SECRETS = table_with(
    publisher=("publisher", 7, None),
    lasting=("publisher", 7, time.time() + 3600),
    expired=("publisher", 7, time.time() - 1),
    consumer=("consumer", 7, None),
    admin=("admin", None, None),
    orphan=("publisher", 8, None),  # a tenant the table no longer has
)


CASES = {  # the Authorization header, and what it counts against (the secrets are random: ids by name)
    "publisher": (f"Bearer {SECRETS['publisher']}", (7, "acme")),
    "lasting": (f"bearer   {SECRETS['lasting']}", (7, "acme")),
    "expired": (f"Bearer {SECRETS['expired']}", None),
    "consumer": (f"Bearer {SECRETS['consumer']}", None),
    "admin key": (f"Bearer {SECRETS['admin']}", None),
    "admin token": (f"Bearer {ADMIN_TOKEN}", None),
    "tenant gone": (f"Bearer {SECRETS['orphan']}", None),
    "forged": (f"Bearer {SECRETS['publisher'][:-4]}abcd", None),  # its prefix, another secret
    "unknown": ("Bearer cp_nothing_here", None),
    "no scheme": (SECRETS["publisher"], None),  # the endpoint refuses it
    "none": ("", None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_only_a_tenants_valid_management_key_is_counted(case: str) -> None:
    header, counted = CASES[case]
    assert tenant_of(TABLE, bearer_of(header), ADMIN_TOKEN) == counted


def test_a_tiny_rate_answers_a_bounded_retry_after_instead_of_overflowing() -> None:
    limits = TenantLimits(rate_per_s=5e-324, burst=1)  # what validation now refuses, as a last resort
    limits.check_rate(1)
    with pytest.raises(RateLimited) as refused:
        limits.check_rate(1)
    assert refused.value.retry_after == MAX_WAIT_S


def test_a_slot_is_given_back_whatever_ends_the_admission(monkeypatch: pytest.MonkeyPatch) -> None:
    throttle = ApiThrottle(Settings(api_tenant_max_concurrency=2), CollectorRegistry())

    def broken(_: int) -> None:
        raise OverflowError("a bug in the rate check")

    monkeypatch.setattr(throttle.limits, "check_rate", broken)
    for _ in range(3):
        with pytest.raises(OverflowError):
            throttle.admit(7, "acme")
    assert throttle.limits.in_flight(7) == 0  # no slot kept: the tenant is not locked out
