"""The console's session, CSRF and origin checks, seen over plain HTTP against the served app."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from control_plane.client import ControlPlane
from control_plane.console.cookies import COOKIE
from tests.console.conftest import World
from tests.support.api import ADMIN_TOKEN
from tests.support.builders import unique_name


@contextmanager
def signed_in(world: World, key: str) -> Iterator[httpx.Client]:
    """A client holding a console session for `key`."""
    with httpx.Client(base_url=world.url, follow_redirects=False, timeout=30) as client:
        answer = client.post("/console/login", data={"key": key})
        assert answer.status_code == 303, answer.text
        yield client


@pytest.fixture
def admin(world: World) -> Iterator[httpx.Client]:
    with signed_in(world, ADMIN_TOKEN) as client:
        yield client


def csrf_of(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def production(world: World) -> int:
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        return sdk.models.get(world.tenant, "mlp").aliases["production"]


def test_the_session_cookie_is_sealed_httponly_strict_and_scoped(world: World) -> None:
    with httpx.Client(base_url=world.url, follow_redirects=False) as client:
        answer = client.post("/console/login", data={"key": world.publisher, "next": "/console/live"})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/live"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/console"
    # The secret part is everything after `cp_<prefix>_` (it may hold "_" itself: token_urlsafe).
    secret = world.publisher.split("_", 2)[2]
    assert len(secret) >= 40 and world.publisher not in cookie and secret not in cookie
    assert world.publisher not in answer.headers["location"]


def test_after_sign_in_goes_only_to_console_pages(world: World) -> None:
    with httpx.Client(base_url=world.url, follow_redirects=False) as client:
        for wanted in ("https://evil.example/x", "//evil.example/console/x", "/docs", "/console"):
            answer = client.post("/console/login", data={"key": ADMIN_TOKEN, "next": wanted})
            assert answer.headers["location"] == "/console/tenants", wanted


def test_state_changes_need_the_session_csrf_token(world: World, admin: httpx.Client) -> None:
    path = f"/console/tenants/{world.tenant}/models/mlp/promote"
    body = {"alias": "production", "version": "2", "confirmed": "yes"}
    for token in (None, "", "forged-token"):
        data = body if token is None else {**body, "csrf": token}
        answer = admin.post(path, data=data)
        assert answer.status_code == 403 and "reload the page" in answer.text
    assert production(world) == 1
    # ...and another session's token is not this one's
    with signed_in(world, ADMIN_TOKEN) as other:
        token = csrf_of(other, f"/console/tenants/{world.tenant}/models/mlp")
    assert admin.post(path, data={**body, "csrf": token}).status_code == 403
    assert production(world) == 1


def test_posts_from_another_origin_are_refused_even_with_the_token(world: World, admin: httpx.Client) -> None:
    token = csrf_of(admin, f"/console/tenants/{world.tenant}/models/mlp")
    path = f"/console/tenants/{world.tenant}/models/mlp/aliases/production/rollback"
    data = {"csrf": token, "confirmed": "yes"}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        answer = admin.post(path, data=data, headers=headers)
        assert answer.status_code == 403 and "refused" in answer.text, headers
    refused = httpx.post(f"{world.url}/console/login", data={"key": ADMIN_TOKEN}, headers={"Origin": "null"})
    assert refused.status_code == 403 and COOKIE not in refused.headers.get("set-cookie", "")
    assert production(world) == 1


def test_a_form_confirms_before_it_changes_anything(world: World, admin: httpx.Client) -> None:
    token = csrf_of(admin, f"/console/tenants/{world.tenant}/models/mlp")
    answer = admin.post(
        f"/console/tenants/{world.tenant}/models/mlp/promote",
        data={"alias": "production", "version": "2", "csrf": token},
    )
    assert answer.status_code == 200 and 'name="confirmed" value="yes"' in answer.text
    assert production(world) == 1
    bad = admin.post(
        f"/console/tenants/{world.tenant}/models/mlp/promote",
        data={"alias": "production", "version": "two", "csrf": token},
    )
    assert bad.status_code == 422 and "version must be a whole number" in bad.text
    superscript = admin.post(
        f"/console/tenants/{world.tenant}/models/mlp/promote",
        data={"alias": "production", "version": "\u00b2", "csrf": token},
    )
    assert (
        superscript.status_code == 422 and "version must be a whole number" in superscript.text
    )  # was a 500


def test_a_tampered_or_missing_session_goes_to_sign_in(world: World, admin: httpx.Client) -> None:
    sealed = admin.cookies[COOKIE]
    with httpx.Client(base_url=world.url, follow_redirects=False) as client:
        answer = client.get("/console/tenants")
        assert (
            answer.status_code == 303
            and answer.headers["location"] == "/console/login?next=%2Fconsole%2Ftenants"
        )
        client.cookies.set(COOKIE, sealed[:-4] + "AAAA", path="/console")
        assert client.get("/console/audit").status_code == 303
        fragment = client.get("/console/live/rows", headers={"HX-Request": "true"})
        assert fragment.headers["hx-redirect"] == "/console/login"  # htmx follows it as a full page


def test_a_revoked_key_ends_its_session(world: World) -> None:
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        created = sdk.keys.create(world.tenant, role="publisher")
        with signed_in(world, created.key) as client:
            assert client.get(f"/console/tenants/{world.tenant}").status_code == 200
            sdk.keys.revoke(world.tenant, created.id)
            answer = client.get(f"/console/tenants/{world.tenant}")
            assert answer.status_code == 303 and answer.headers["location"].startswith("/console/login")


def test_pages_carry_a_strict_content_security_policy(world: World, admin: httpx.Client) -> None:
    page = admin.get("/console/tenants")
    policy = page.headers["content-security-policy"]
    assert (
        "default-src 'self'" in policy
        and "script-src 'self';" in policy
        and "frame-ancestors 'none'" in policy
    )
    assert page.headers["cache-control"] == "no-store"
    for docs in ("/docs", "/redoc"):
        assert "img-src 'self' data:" in httpx.get(world.url + docs).headers["content-security-policy"]
    missing = admin.get("/console/no-such-page")
    assert missing.status_code == 404 and "no such page" in missing.text


def test_tenant_and_model_listings_come_a_page_at_a_time(world: World, admin: httpx.Client) -> None:
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        tenant = sdk.tenants.create(unique_name("pages")).name
        for name in ("a", "b", "c"):
            sdk.models.create(tenant, name=name, format="onnx")

    first = admin.get(f"/console/tenants/{tenant}?limit=2")
    assert first.status_code == 200
    assert re.findall(r'/models/([abc])">', first.text) == ["a", "b"]
    following = re.search(r'id="next-page" href="([^"]+)"', first.text)
    assert following is not None and following.group(1) == "?after=b&amp;limit=2"
    last = admin.get(f"/console/tenants/{tenant}?after=b&limit=2")
    assert re.findall(r'/models/([abc])">', last.text) == ["c"] and "next-page" not in last.text

    # The tenants page names each tenant's models; paging through it finds this tenant once.
    seen: list[str] = []
    url: str | None = "/console/tenants?limit=2"
    while url is not None:
        answer = admin.get(url)
        assert answer.status_code == 200
        seen += re.findall(r'<td><a href="/console/tenants/([^"/]+)">', answer.text)
        step = re.search(r'id="next-page" href="\?([^"]+)"', answer.text)
        url = "/console/tenants?" + step.group(1).replace("&amp;", "&") if step else None
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        listed = [t.name for t in sdk.tenants.list()]  # the API's order, the database's collation
    assert seen.count(tenant) == 1 and seen == listed
    assert admin.get("/console/tenants?limit=0").status_code == 422


def test_a_tenants_page_shows_what_it_holds_against_its_quotas(world: World, admin: httpx.Client) -> None:
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        tenant = sdk.tenants.create(unique_name("quota")).name
        sdk.models.create(tenant, name="a", format="onnx")
        unlimited = admin.get(f"/console/tenants/{tenant}").text
        sdk.tenants.set_quota(tenant, max_models=3, max_artifact_bytes=2 * 1024**2)
        sdk.tenants.set_limits(tenant, rate_per_s=2.5, burst=5, max_concurrency=4)
    limited = admin.get(f"/console/tenants/{tenant}").text

    def line(html: str, what: str = "quota") -> str:
        found = re.search(rf'<p id="{what}"[^>]*>(.*?)</p>', html, re.S)
        assert found is not None, html
        return " ".join(found.group(1).split())

    assert line(unlimited) == (
        "Holds 1 model(s), 0 live version(s), 0 Bytes of artifacts, 0 alias(es) and 0 live key(s); no quota."
    )
    assert line(limited) == (
        "Holds 1 model(s) of 3, 0 live version(s), 0 Bytes of artifacts of 2.0 MiB, 0 alias(es) "
        "and 0 live key(s)."
    )
    assert line(unlimited, "limits") == "Inference: no rate limit, no limit in flight."
    assert line(limited, "limits") == "Inference: 2.5 request(s) a second (burst 5), 4 in flight at most."


def test_an_alias_is_deleted_after_confirmation_and_only_by_whom_may(
    world: World, admin: httpx.Client
) -> None:
    alias = unique_name("gone")
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        sdk.aliases.promote(world.tenant, "mlp", 2, alias=alias)
    page = f"/console/tenants/{world.tenant}/models/mlp/aliases/{alias}"
    token = csrf_of(admin, page)
    assert 'id="delete-alias"' in admin.get(page).text
    asked = admin.post(page + "/delete", data={"csrf": token})
    assert asked.status_code == 200 and 'name="confirmed" value="yes"' in asked.text
    assert f"Delete &#39;{alias}&#39;" in asked.text and "points at v2" in asked.text
    assert admin.post(page + "/delete", data={"confirmed": "yes"}).status_code == 403  # no CSRF token
    with signed_in(world, world.publisher) as publisher:
        mine = csrf_of(publisher, page)
        refused = publisher.post(
            f"/console/tenants/{world.tenant}/models/mlp/aliases/production/delete",
            data={"csrf": mine, "confirmed": "yes"},
        )
        assert refused.status_code == 403 and "only admins may delete it" in refused.text
    assert production(world) == 1
    done = admin.post(page + "/delete", data={"csrf": token, "confirmed": "yes"})
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/tenants/{world.tenant}/models/mlp?deleted={alias}"
    after = admin.get(done.headers["location"])
    assert f"Done: alias '{alias}' deleted." in after.text
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        assert alias not in sdk.models.get(world.tenant, "mlp").aliases
    assert admin.get(page).status_code == 404


def test_a_tenant_is_deleted_by_an_admin_after_confirmation(world: World, admin: httpx.Client) -> None:
    with ControlPlane(world.url, ADMIN_TOKEN) as sdk:
        doomed = sdk.tenants.create(unique_name("doomed")).name
        key = sdk.keys.create(doomed, role="publisher").key
    page = f"/console/tenants/{doomed}"
    token = csrf_of(admin, page)
    assert 'id="delete-tenant"' in admin.get(page).text
    with signed_in(world, key) as publisher:
        assert 'id="delete-tenant"' not in publisher.get(page).text
        refused = publisher.post(
            page + "/delete", data={"csrf": csrf_of(publisher, page), "confirmed": "yes"}
        )
        assert refused.status_code == 403 and "admin role required" in refused.text
    asked = admin.post(page + "/delete", data={"csrf": token})
    assert asked.status_code == 200 and 'name="confirmed" value="yes"' in asked.text
    assert f"Delete tenant {doomed}?" in asked.text and "1 live key(s) revoked" in asked.text
    assert admin.post(page + "/delete", data={"confirmed": "yes"}).status_code == 403  # no CSRF token
    assert admin.get(page).status_code == 200

    done = admin.post(page + "/delete", data={"csrf": token, "confirmed": "yes"})
    assert done.status_code == 303 and done.headers["location"] == f"/console/tenants?deleted={doomed}"
    assert f"Done: tenant '{doomed}' deleted." in admin.get(done.headers["location"]).text
    assert admin.get(page).status_code == 404
    with httpx.Client(base_url=world.url, follow_redirects=False, timeout=30) as client:
        sign_in = client.post("/console/login", data={"key": key})  # its key is refused
        assert sign_in.status_code == 401, sign_in.text


def test_the_promote_forms_alias_suggestions_name_each_alias_once(world: World, admin: httpx.Client) -> None:
    page = admin.get(f"/console/tenants/{world.tenant}/models/mlp").text
    [suggestions] = re.findall(r'<datalist id="alias-names">(.*?)</datalist>', page)
    names = re.findall(r'<option value="([^"]+)">', suggestions)
    assert "production" in names and "staging" in names
    assert len(names) == len(set(names)), names  # production was listed twice: as the model's, and always
