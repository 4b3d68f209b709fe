"""Per-tenant limits on the management API, served by a real uvicorn on Postgres and the bundled Triton: a
tenant's requests in flight and its request rate are capped, so one tenant's burst of slow uploads or of
load waits cannot hold the threads and connections every tenant's management requests share. Past a limit
the tenant gets a 429 with Retry-After that says which limit; other tenants, admins and inference go on."""

from __future__ import annotations

import functools
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from control_plane.dataplane.limits import TenantLimits
from control_plane.keys.secrets import prefix_of
from tests.support.api import Api
from tests.support.triton_models import MODEL, PYTHON_SPEC

LOAD_S = 6.0  # how long the slow model's initialize() sleeps


def known(served: Api, *keys: str) -> None:
    """Wait until the in-memory key table (what the throttle reads) has every key."""
    deadline = time.monotonic() + 10
    while not all(prefix_of(key) in served.state.router.table.keys for key in keys):
        assert time.monotonic() < deadline, "the routing table never saw the keys"
        time.sleep(0.02)


def get_models(served: Api, tenant: str, key: str) -> httpx.Response:
    return served.client.get(f"/v1/tenants/{tenant}/models", headers=served.headers(key))


def throttled(answer: httpx.Response, words: str) -> bool:
    """A 429 RateLimited with a Retry-After, saying `words`."""
    return (
        answer.status_code == 429
        and answer.json()["error"] == "RateLimited"
        and words in answer.json()["detail"]
        and int(answer.headers["retry-after"]) >= 1
    )


def refusals(served: Api, tenant: str, reason: str) -> float:
    value = served.state.metrics.registry.get_sample_value(
        "cp_api_throttled_total", {"tenant": tenant, "reason": reason}
    )
    return value or 0.0


@contextmanager
def slow_upload(served: Api, tenant: str, key: str) -> Iterator[None]:
    """An upload whose body never finishes arriving, for the length of the block."""
    url = httpx.URL(str(served.client.base_url))
    with socket.create_connection((url.host, url.port), timeout=30) as conn:
        conn.sendall(
            f"POST /v1/tenants/{tenant}/models/m/versions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {key}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            "Content-Length: 1000000\r\n\r\n--b\r\n".encode()
        )
        yield


def taken(slots: TenantLimits, tenant_id: int, count: int) -> bool:
    return slots.in_flight(tenant_id) == count


def settled(slots: TenantLimits, tenant_id: int) -> None:
    """Wait until the tenant's earlier requests have given their slots back: a request's slot is given back
    when the app is done with it, which may be a moment after its client has the answer (a console page's
    dependency ends after the page is sent), so a slot seen taken right after is not yet the next one's."""
    until(functools.partial(taken, slots, tenant_id, 0), "an earlier request still holds a slot")


def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_tenants_slow_uploads_fill_its_own_slots_and_nobody_elses(make_served: Callable[..., Api]) -> None:
    served = make_served(api_tenant_max_concurrency=2)
    greedy, other = served.tenant(), served.tenant()
    for tenant in (greedy, other):
        assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    greedy_key, other_key = served.key(greedy), served.key(other)
    known(served, greedy_key, other_key)

    tenant_id = served.state.router.table.tenant_ids[greedy]
    slots = served.state.api_throttle.limits
    settled(slots, tenant_id)
    with ExitStack() as uploads:
        for held in (1, 2):
            uploads.enter_context(slow_upload(served, greedy, greedy_key))
            until(functools.partial(taken, slots, tenant_id, held), "the upload took no slot")
        refused = get_models(served, greedy, greedy_key)
        beside = get_models(served, other, other_key)
        admin = get_models(served, greedy, served.admin_token)

    assert throttled(refused, "2 management API requests in flight (limit 2)"), refused.text
    assert beside.status_code == 200, beside.text
    assert admin.status_code == 200, admin.text  # the operators are not limited
    assert refusals(served, greedy, "concurrency") >= 1
    assert refusals(served, other, "concurrency") == 0
    # The clients hung up: their uploads ended, and so did their hold on the tenant's slots.
    until(functools.partial(taken, slots, tenant_id, 0), "the slots were not given back")
    assert get_models(served, greedy, greedy_key).status_code == 200


def test_a_tenant_over_its_request_rate_gets_429_and_others_do_not(make_served: Callable[..., Api]) -> None:
    served = make_served(api_tenant_rate_limit=0.1, api_tenant_burst=3)
    greedy, other = served.tenant(), served.tenant()
    greedy_key, other_key = served.key(greedy), served.key(other)
    known(served, greedy_key, other_key)

    answers = [get_models(served, greedy, greedy_key) for _ in range(5)]
    beside = [get_models(served, other, other_key) for _ in range(3)]
    admin = [get_models(served, greedy, served.admin_token) for _ in range(10)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429], [a.text for a in answers]
    assert throttled(answers[3], "management API request rate over 0.1/s")
    assert answers[3].headers["retry-after"] in ("9", "10")  # a token every 10 s, the last taken just now
    assert [a.status_code for a in beside] == [200] * 3
    assert [a.status_code for a in admin] == [200] * 10
    assert refusals(served, greedy, "rate") == 2


def test_a_request_refused_for_want_of_a_slot_spends_no_token(make_served: Callable[..., Api]) -> None:
    """A client retrying at its Retry-After while its slots are taken must find its rate intact after."""
    served = make_served(api_tenant_max_concurrency=1, api_tenant_rate_limit=0.01, api_tenant_burst=2)
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    key = served.key(tenant)
    known(served, key)
    tenant_id = served.state.router.table.tenant_ids[tenant]
    slots = served.state.api_throttle.limits
    settled(slots, tenant_id)

    with slow_upload(served, tenant, key):  # a slot and a token
        until(functools.partial(taken, slots, tenant_id, 1), "the upload took no slot")
        retries = [get_models(served, tenant, key) for _ in range(4)]
    until(functools.partial(taken, slots, tenant_id, 0), "the slot was not given back")
    after = get_models(served, tenant, key)  # the bucket's second token

    assert all(throttled(r, "in flight (limit 1)") for r in retries), [r.text for r in retries]
    assert after.status_code == 200, after.text


def test_a_consumer_keys_slow_body_holds_none_of_its_tenants_slots(make_served: Callable[..., Api]) -> None:
    """An application's key may not call the management API (403), so what it sends there must not lock its
    tenant's publishers out: trickling a body would otherwise hold a slot as long as it liked."""
    served = make_served(api_tenant_max_concurrency=1)
    tenant = served.tenant()
    assert served.create_model(tenant, name="m", format="onnx").status_code == 201
    key, consumer = served.key(tenant), served.key(tenant, "consumer")
    known(served, key, consumer)

    with slow_upload(served, tenant, consumer):
        time.sleep(0.5)  # its headers are in, its body is not
        beside = get_models(served, tenant, key)

    assert beside.status_code == 200, beside.text


def test_a_forged_key_with_a_tenants_prefix_spends_none_of_its_allowance(
    make_served: Callable[..., Api],
) -> None:
    """Key prefixes are no secret (the audit log shows them): only a key whose hash matches is counted."""
    served = make_served(api_tenant_rate_limit=0.01, api_tenant_burst=2)
    tenant = served.tenant()
    key = served.key(tenant)
    known(served, key)
    forged = key[:-6] + ("aaaaaa" if not key.endswith("aaaaaa") else "bbbbbb")
    assert prefix_of(forged) == prefix_of(key)

    attempts = [get_models(served, tenant, forged).status_code for _ in range(10)]

    assert attempts == [401] * 10
    assert [get_models(served, tenant, key).status_code for _ in range(2)] == [200, 200]


def load_waits_beside_a_listing(served: Api, tmp_path: Path) -> tuple[Counter[int], httpx.Response, bool]:
    """48 `/load` calls at once of one tenant, on a version whose load takes LOAD_S, and another tenant's
    model listing 1 s into them: the loads' statuses, the listing, and whether the listing was answered
    before the first load was."""
    greedy, other = served.tenant(), served.tenant()
    assert served.create_model(greedy, name="slow", format="python", **PYTHON_SPEC).status_code == 201
    source = tmp_path / "model.py"
    source.write_text(MODEL.format(init=f"import time; time.sleep({LOAD_S})", scale=2.0, offset=0.0))
    assert served.upload(greedy, "slow", source).status_code == 201  # registered, not loaded
    greedy_key, other_key = served.key(greedy), served.key(other)
    known(served, greedy_key, other_key)
    finished: dict[str, float] = {}
    lock = threading.Lock()

    def load(_: int) -> int:
        with httpx.Client(base_url=str(served.client.base_url), timeout=120) as client:
            answer = client.post(
                f"/v1/tenants/{greedy}/models/slow/versions/1/load", headers=served.headers(greedy_key)
            )
        if answer.status_code == 200:
            with lock:
                finished.setdefault("load", time.monotonic())
        return answer.status_code

    with ThreadPoolExecutor(48) as pool:
        loads = pool.map(load, range(48))
        time.sleep(1.0)  # the waits have begun
        beside = get_models(served, other, other_key)
        finished["beside"] = time.monotonic()
        statuses = Counter(loads)
    return statuses, beside, finished["beside"] < finished["load"]


def test_a_tenants_load_waits_hold_no_thread_another_tenant_needs(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    """`/load` waits for the load, on one of the threads every management request runs on (40 of them):
    a tenant's 48 waits at once would hold them all, and another tenant's listing would wait for the load."""
    statuses, beside, first = load_waits_beside_a_listing(make_served(api_tenant_max_concurrency=4), tmp_path)

    assert beside.status_code == 200, beside.text
    assert first  # answered while the load was still under way
    assert statuses == Counter({200: 4, 429: 44}), statuses


def test_load_waits_of_any_tenants_hold_none_of_the_request_threads(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    """Calls that wait for a load run on threads of their own (`CP_LOAD_WAIT_THREADS`), so even with no
    per-tenant limit, 48 waits hold none of the 40 threads every other management request runs on; past
    their threads they queue, and all of them are answered once the load is done."""
    served = make_served(api_tenant_max_concurrency=0, load_wait_threads=4)
    statuses, beside, first = load_waits_beside_a_listing(served, tmp_path)

    assert beside.status_code == 200, beside.text
    assert first  # answered while the load was still under way
    assert statuses == Counter({200: 48}), statuses


def console_session(served: Api, key: str) -> tuple[httpx.Client, str]:
    """A browser's session of the console, signed in with `key`, and its CSRF token."""
    client = httpx.Client(base_url=str(served.client.base_url), timeout=120)
    signed_in = client.post("/console/login", data={"key": key}, follow_redirects=False)
    assert signed_in.status_code == 303, signed_in.text
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/tenants").text)
    assert token is not None
    return client, token.group(1)


def test_a_console_promote_waiting_for_its_load_holds_a_slot_of_its_tenant(
    make_served: Callable[..., Api], tmp_path: Path
) -> None:
    """The console's promote waits for the load on a worker thread, as `/load` does, so it counts; and a
    promote of a version not loaded yet works from the console (it was a 500: the promote ends its
    transaction before the load, inside the console's own)."""
    served = make_served(api_tenant_max_concurrency=1)
    tenant = served.tenant()
    assert served.create_model(tenant, name="slow", format="python", **PYTHON_SPEC).status_code == 201
    source = tmp_path / "model.py"
    source.write_text(MODEL.format(init="import time; time.sleep(3)", scale=2.0, offset=0.0))
    assert served.upload(tenant, "slow", source).status_code == 201  # registered, not loaded
    key = served.key(tenant)
    known(served, key)
    tenant_id = served.state.router.table.tenant_ids[tenant]
    slots = served.state.api_throttle.limits
    browser, csrf = console_session(served, key)
    promoted: list[httpx.Response] = []
    form = {"alias": "staging", "version": "1", "csrf": csrf, "confirmed": "yes"}

    def promote() -> None:
        url = f"/console/tenants/{tenant}/models/slow/promote"
        promoted.append(browser.post(url, data=form, follow_redirects=False))

    settled(slots, tenant_id)  # the console's pages above
    try:
        waiting = threading.Thread(target=promote)
        waiting.start()
        until(functools.partial(taken, slots, tenant_id, 1), "the console's promote took no slot")
        refused = get_models(served, tenant, key)
        waiting.join(timeout=60)
    finally:
        browser.close()

    assert throttled(refused, "1 management API requests in flight (limit 1)"), refused.text
    assert promoted[0].status_code == 303, promoted[0].text[:500]
    # The sign-in dependency gives its slot back once the answer is sent: a moment after the browser has it.
    until(functools.partial(taken, slots, tenant_id, 0), "the console's slot was not given back")
    assert served.version(tenant, "slow", 1)["state"] == "ready"
