"""The console's key pages against the served app: an admin lists a tenant's keys, creates one (its secret
shown once, and it works on the API at once), and revokes one after confirming (401 on the API after);
publishers may not see them, forms need the session's CSRF token, and bad input is a 422 in the form's
terms."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from control_plane.client import ControlPlane
from tests.console.conftest import World
from tests.console.test_console_http import csrf_of, signed_in
from tests.support.api import ADMIN_TOKEN
from tests.support.builders import unique_name


@pytest.fixture
def admin(world: World) -> Iterator[httpx.Client]:
    with signed_in(world, ADMIN_TOKEN) as client:
        yield client


def api_status(world: World, key: str, tenant: str) -> int:
    return httpx.get(
        f"{world.url}/v1/tenants/{tenant}", headers={"Authorization": f"Bearer {key}"}
    ).status_code


def test_an_admin_creates_a_key_sees_it_once_and_revokes_it(world: World, admin: httpx.Client) -> None:
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        tenant = sdk.tenants.create(unique_name("keys")).name
    keys_page = f"/console/tenants/{tenant}/keys"
    assert 'id="tenant-keys"' in admin.get(f"/console/tenants/{tenant}").text
    token = csrf_of(admin, keys_page)

    created = admin.post(
        keys_page,
        data={"csrf": token, "role": "publisher", "description": "ci <b>bot</b>", "expires_in_days": "30"},
    )
    assert created.status_code == 200, created.text
    assert created.headers["cache-control"] == "no-store"
    secret = re.search(r'<code id="new-key">([^<]+)</code>', created.text)
    assert secret is not None
    key = secret.group(1)
    assert "ci &lt;b&gt;bot&lt;/b&gt;" in created.text  # escaped, never markup
    assert api_status(world, key, tenant) == 200  # it works on the API at once

    listed = admin.get(keys_page).text
    prefix = key.split("_")[1]
    assert f'data-key="{prefix}"' in listed and key not in listed  # the prefix, never the secret again
    assert "active" in listed
    key_id = re.search(rf'data-key="{prefix}".*?action="[^"]*/keys/(\d+)/revoke"', listed, re.S)
    assert key_id is not None
    revoke = f"{keys_page}/{key_id.group(1)}/revoke"

    asked = admin.post(revoke, data={"csrf": token})
    assert asked.status_code == 200 and 'name="confirmed" value="yes"' in asked.text
    assert f'href="{keys_page}"' in asked.text  # Cancel goes back to the keys
    assert api_status(world, key, tenant) == 200  # nothing changed before confirming
    done = admin.post(revoke, data={"csrf": token, "confirmed": "yes"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].endswith(f"{keys_page}?done=revoke")
    assert api_status(world, key, tenant) == 401
    after = admin.get(done.headers["location"]).text
    assert 'id="done"' in after and "revoked" in after

    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        actions = [e.action for e in sdk.audit.list(tenant=tenant)]
    assert "key.create" in actions and "key.revoke" in actions


def test_an_admin_creates_an_admin_key_for_a_colleague_and_revokes_it(
    world: World, admin: httpx.Client
) -> None:
    assert 'id="nav-keys"' in admin.get("/console/tenants").text
    token = csrf_of(admin, "/console/keys")
    created = admin.post(
        "/console/keys", data={"csrf": token, "description": "colleague", "expires_in_days": "7"}
    )
    assert created.status_code == 200, created.text
    found = re.search(r'<code id="new-key">([^<]+)</code>', created.text)
    assert found is not None
    key = found.group(1)
    listed = httpx.get(f"{world.url}/v1/tenants", headers={"Authorization": f"Bearer {key}"})
    assert listed.status_code == 200  # an admin's key: every tenant
    prefix = key.split("_")[1]
    page = admin.get("/console/keys").text
    key_id = re.search(rf'data-key="{prefix}".*?action="[^"]*/keys/(\d+)/revoke"', page, re.S)
    assert key_id is not None and "colleague" in page
    revoke = f"/console/keys/{key_id.group(1)}/revoke"
    done = admin.post(revoke, data={"csrf": token, "confirmed": "yes"}, follow_redirects=False)

    assert done.status_code == 303 and done.headers["location"].endswith("/console/keys?done=revoke")
    assert httpx.get(f"{world.url}/v1/tenants", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        events = [(e.action, e.target) for e in sdk.audit.list(action="key.create", limit=50)]
    assert ("key.create", f"key/{prefix}") in events


def test_publishers_may_not_manage_keys_and_forms_need_the_token(world: World, admin: httpx.Client) -> None:
    keys_page = f"/console/tenants/{world.tenant}/keys"
    with signed_in(world, world.publisher) as publisher:
        assert publisher.get(keys_page).status_code == 403
        assert publisher.get("/console/keys").status_code == 403
        assert 'id="tenant-keys"' not in publisher.get(f"/console/tenants/{world.tenant}").text
        token = csrf_of(publisher, f"/console/tenants/{world.tenant}")
        assert publisher.post(keys_page, data={"csrf": token, "role": "publisher"}).status_code == 403
    assert admin.post(keys_page, data={"role": "publisher"}).status_code == 403  # no token
    assert admin.get(f"/console/tenants/{unique_name('nobody')}/keys").status_code == 404


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"role": "admin"}, "role: choose publisher or consumer"),
        ({"role": ""}, "role: choose publisher or consumer"),
        ({"role": "consumer", "expires_in_days": "0"}, "expires in: a whole number of days"),
        ({"role": "consumer", "expires_in_days": "-3"}, "expires in: a whole number of days"),
        ({"role": "consumer", "expires_in_days": "99999999"}, "expires in: a whole number of days"),
        ({"role": "consumer", "description": "x" * 201}, "at most 200 characters"),
        (
            {"role": "consumer", "expires_in_days": "\u00b2"},
            "expires in: a whole number of days",
        ),  # was a 500
        (
            {"role": "consumer", "expires_in_days": "\u0663"},
            "expires in: a whole number of days",
        ),  # was 3 days
        ({"role": "consumer", "description": "ci\x00bot"}, "may not hold control characters"),  # was a 500
    ],
)
def test_a_bad_new_key_form_is_422_in_its_own_terms(
    world: World, admin: httpx.Client, form: dict[str, str], says: str
) -> None:
    keys_page = f"/console/tenants/{world.tenant}/keys"
    before = admin.get(keys_page).text.count("data-key=")
    answer = admin.post(keys_page, data={"csrf": csrf_of(admin, keys_page), **form})
    assert answer.status_code == 422 and says in answer.text, answer.text
    assert admin.get(keys_page).text.count("data-key=") == before
