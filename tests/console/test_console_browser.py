"""The console and the API docs in a real headless chromium against the real stack.

One app (uvicorn, Postgres, S3 server, the bundled Triton) and one browser for the module; the tests run
in order on the same browser. Every page is saved as a screenshot (see `screenshots` in conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from control_plane.client import ControlPlane
from tests.console.conftest import Request, World, requested
from tests.support.api import ADMIN_TOKEN
from tests.support.builders import unique_name

WAIT_S = 20


def wait_css(driver: webdriver.Chrome, css: str) -> WebElement:
    """The first element matching `css`, once it is visible."""
    element: WebElement = WebDriverWait(driver, WAIT_S).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css))
    )
    return element


def wait_text(driver: webdriver.Chrome, css: str, text: str) -> WebElement:
    """The element matching `css` once its text contains `text`."""
    WebDriverWait(driver, WAIT_S).until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text))
    return driver.find_element(By.CSS_SELECTOR, css)


def shot(driver: webdriver.Chrome, folder: Path, name: str) -> None:
    """Save the page as `<name>.png`."""
    assert driver.save_screenshot(str(folder / f"{name}.png")), name


def sign_in(driver: webdriver.Chrome, url: str, key: str) -> None:
    """Type `key` into the sign-in form and submit it."""
    driver.get(f"{url}/console/login")
    field = wait_css(driver, "#key")
    field.send_keys(key)
    driver.find_element(By.ID, "sign-in").click()
    # The form's answer (the next page, or the refusal) must be in before the test navigates elsewhere.
    WebDriverWait(driver, 10).until(
        lambda d: "/console/login" not in d.current_url or d.find_elements(By.CSS_SELECTOR, ".error, #error")
    )


def sign_out(driver: webdriver.Chrome) -> None:
    """Press "Sign out" and wait for the sign-in form."""
    driver.find_element(By.ID, "sign-out").click()
    wait_css(driver, "#key")


def assert_only_local(requests: list[Request], origin: str) -> None:
    """Nothing came from outside the app's origin: any such request was refused by the page's CSP.

    (data: and blob: URLs are the page's own. The browser resolves no other host anyway; a request
    that failed on that, rather than on the page's policy, means the page reached for the internet.)
    """
    assert requests, "the performance log recorded no request"
    outside = [r for r in requests if not r.url.startswith((origin + "/", "data:", "blob:", "about:"))]
    attempted = [r for r in outside if r.blocked != "csp"]
    assert not attempted, f"requests outside {origin}: {attempted}"


def wait_total(browser: webdriver.Chrome, tenant: str, at_least: int) -> WebElement:
    """The live table's row of tenant's `mlp` once it counts `at_least` requests (htmx polls it)."""
    css = f"#live tr[data-model='{tenant}/mlp']"

    def counted(driver: webdriver.Chrome) -> WebElement | Literal[False]:
        rows = driver.find_elements(By.CSS_SELECTOR, css)
        total = rows[0].find_element(By.CSS_SELECTOR, ".total").text if rows else ""
        return rows[0] if total.isdigit() and int(total) >= at_least else False

    return WebDriverWait(browser, WAIT_S).until(counted)


def test_docs_render_offline_from_bundled_assets(
    browser: webdriver.Chrome, world: World, screenshots: Path
) -> None:
    requested(browser)  # drop what came before
    browser.get(f"{world.url}/docs")
    assert "Triton control plane" in wait_css(browser, ".swagger-ui .info .title").text
    wait_css(browser, ".opblock-summary-path")
    paths = {
        e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert {"/v1/predict/{model}", "/v2/models/{model}/infer", "/v1/tenants"} <= paths, paths
    shot(browser, screenshots, "docs")
    assert_only_local(requested(browser), world.url)


def test_redoc_renders_offline_from_bundled_assets(
    browser: webdriver.Chrome, world: World, screenshots: Path
) -> None:
    requested(browser)
    browser.get(f"{world.url}/redoc")
    wait_text(browser, ".api-info h1", "Triton control plane")
    wait_text(browser, ".api-content", "/v2/models/{model}/infer")
    shot(browser, screenshots, "redoc")
    assert_only_local(requested(browser), world.url)


def test_a_consumer_key_is_refused(browser: webdriver.Chrome, world: World, screenshots: Path) -> None:
    sign_in(browser, world.url, world.consumer)
    assert "consumer keys may only call inference endpoints" in wait_css(browser, "#error").text
    shot(browser, screenshots, "login-consumer-refused")
    browser.get(f"{world.url}/console/tenants/{world.tenant}")
    wait_css(browser, "#key")  # sent to the sign-in page: no session was opened
    assert "/console/login" in browser.current_url
    assert world.consumer not in browser.current_url


def test_admin_browses_promotes_and_rolls_back(
    browser: webdriver.Chrome, world: World, screenshots: Path
) -> None:
    sign_in(browser, world.url, ADMIN_TOKEN)
    tenants = wait_css(browser, "#tenants")
    listed = tenants.text
    while world.tenant not in tenants.text:  # the session's database holds other tests' tenants: page on
        browser.find_element(By.ID, "next-page").click()
        WebDriverWait(browser, WAIT_S).until(ec.staleness_of(tenants))
        tenants = wait_css(browser, "#tenants")
        listed += tenants.text
    assert world.other_tenant in listed  # created just after it, named before it: on this page or before
    assert world.consumer not in browser.current_url and ADMIN_TOKEN not in browser.current_url
    shot(browser, screenshots, "tenants")
    browser.find_element(By.LINK_TEXT, world.tenant).click()
    wait_text(browser, "#models", "mlp")
    shot(browser, screenshots, "tenant")

    browser.find_element(By.CSS_SELECTOR, "#models a").click()
    versions = wait_css(browser, "#versions")
    assert [r.get_attribute("data-version") for r in versions.find_elements(By.CSS_SELECTOR, "tbody tr")] == [
        "2",
        "1",
    ]
    assert versions.text.count("ready") == 2
    assert alias_version(browser) == "v1"
    wait_total(browser, world.tenant, world.predictions)
    shot(browser, screenshots, "model")

    browser.find_element(By.LINK_TEXT, "v2").click()
    assert "sha256" in wait_css(browser, "dl.facts").text
    assert 'name: "' in browser.find_element(By.ID, "config").text  # config.pbtxt
    assert browser.find_element(By.ID, "memory").text  # measured memory, or "unknown"
    shot(browser, screenshots, "version")
    browser.back()

    # Promote v2 to production: the form, then the confirmation page, then the alias page.
    Select(wait_css(browser, "#promote-version")).select_by_value("2")
    alias = browser.find_element(By.ID, "promote-alias")
    alias.clear()
    alias.send_keys("production")
    browser.find_element(By.ID, "promote").click()
    assert (
        "now points at v1; it will point at v2"
        in wait_css(browser, "#confirm-form").find_element(By.XPATH, "..").text
    )
    shot(browser, screenshots, "confirm-promote")
    browser.find_element(By.ID, "confirm").click()
    wait_text(browser, "#alias-version", "v2")
    assert "Done: promote" in browser.find_element(By.ID, "done").text
    shot(browser, screenshots, "alias-promoted")

    # Roll back through the alias page.
    browser.find_element(By.ID, "rollback").click()
    wait_text(browser, "#confirm-form", "")
    assert "it will point at v1" in browser.find_element(By.TAG_NAME, "main").text
    browser.find_element(By.ID, "confirm").click()
    wait_text(browser, "#alias-version", "v1")
    history = browser.find_element(By.ID, "history").text
    assert "rollback" in history and "promote" in history
    shot(browser, screenshots, "alias")

    with ControlPlane(world.url, ADMIN_TOKEN) as admin:
        moves = admin.aliases.history(world.tenant, "mlp")
        assert [(m.action, m.from_version, m.to_version) for m in moves[:2]] == [
            ("rollback", 2, 1),
            ("promote", 1, 2),
        ]
        assert [m.actor for m in moves[:2]] == ["admin-token", "admin-token"]


def alias_version(browser: webdriver.Chrome) -> str:
    """The production alias' version as the model page shows it."""
    return wait_css(browser, "#aliases tr[data-alias='production'] .alias-version").text


def test_admin_sets_a_canary_and_a_shadow(browser: webdriver.Chrome, world: World, screenshots: Path) -> None:
    browser.get(f"{world.url}/console/tenants/{world.tenant}/models/mlp/aliases/staging")
    form = wait_css(browser, "#traffic-form")
    form.find_element(By.NAME, "weight_1").send_keys("30")
    form.find_element(By.NAME, "weight_2").send_keys("70")
    Select(form.find_element(By.ID, "shadow-version")).select_by_value("1")
    percent = form.find_element(By.NAME, "shadow_percent")
    percent.clear()
    percent.send_keys("100")
    browser.find_element(By.ID, "set-traffic").click()
    confirm = wait_css(browser, "#confirm-form").find_element(By.XPATH, "..").text
    assert "Now: no canary split; no shadow." in confirm
    assert "After: v1 30 %, v2 70 %; shadow v1 at 100 %." in confirm
    browser.find_element(By.ID, "confirm").click()
    wait_text(browser, "#done", "Done: traffic")
    with ControlPlane(world.url, world.consumer) as client:

        def mirrored(driver: webdriver.Chrome) -> bool:
            # KServe v2 (the /v1/predict path mirrors nothing to a shadow)
            client.inference.infer(
                "mlp", {"x": np.asarray([[0.1, 0.2, 0.3, 0.4]], np.float32)}, alias="staging"
            )
            driver.refresh()  # rather than wait for htmx's next poll of the table (every 5 s)
            return shadow_compared(driver) >= 1

        # Mirrors run after each live answer, compared when the shadow's answer is in.
        WebDriverWait(
            browser, WAIT_S, poll_frequency=0.25, ignored_exceptions=[StaleElementReferenceException]
        ).until(mirrored)
    assert "v1" in browser.find_element(By.ID, "shadow-table").text
    shot(browser, screenshots, "alias-canary-shadow")
    with ControlPlane(world.url, ADMIN_TOKEN) as admin:
        split = admin.traffic.get(world.tenant, "mlp", alias="staging")
        assert [(r.version, r.weight) for r in split.routes] == [(1, 30), (2, 70)]
        assert split.shadow is not None and (split.shadow.version, split.shadow.percent) == (1, 100)


def shadow_compared(driver: webdriver.Chrome) -> int:
    """Matches + mismatches + errors in the shadow table (0 while it is not there)."""
    cells = driver.find_elements(By.CSS_SELECTOR, "#shadow-table tbody td")
    return sum(int(c.text) for c in cells[2:5]) if len(cells) >= 5 else 0


def only_rollback_row(driver: webdriver.Chrome) -> str | Literal[False]:
    """The audit table's one row's text once the table holds exactly one alias.rollback row."""
    rows = driver.find_elements(By.CSS_SELECTOR, "#audit-rows tr")
    if [r.get_attribute("data-action") for r in rows] != ["alias.rollback"]:
        return False
    return str(rows[0].text)


def test_the_audit_log_shows_the_moves(browser: webdriver.Chrome, world: World, screenshots: Path) -> None:
    browser.find_element(By.ID, "nav-audit").click()
    form = wait_css(browser, "#audit-filters")
    form.find_element(By.NAME, "tenant").send_keys(world.tenant)
    form.find_element(By.NAME, "action").send_keys("alias.rollback")
    browser.find_element(By.ID, "filter").click()
    row = WebDriverWait(browser, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: only_rollback_row(d)
    )  # htmx swaps the rows in: they are read as they are once the filter has applied
    assert f"{world.tenant}/mlp@production" in row and "admin-token" in row
    assert "action=alias.rollback" in browser.current_url  # htmx pushed the filters into the address
    shot(browser, screenshots, "audit")

    browser.find_element(By.ID, "nav-instances").click()
    wait_css(browser, ".instance")  # the session database may hold other tests' instances too: any of them
    assert any(world.tenant in card.text for card in browser.find_elements(By.CSS_SELECTOR, ".instance"))
    shot(browser, screenshots, "instances")
    with ControlPlane(world.url, world.consumer) as client:
        for _ in range(3):
            client.predict("mlp", {"x": [[0.5, 0.6, 0.7, 0.8]]})
    browser.find_element(By.ID, "nav-live").click()
    live = wait_total(browser, world.tenant, world.predictions + 3)
    cells = [c.text for c in live.find_elements(By.TAG_NAME, "td")]
    assert cells[5].endswith(" ms") and cells[6].endswith(" ms"), cells  # p50, p99 of the window
    assert cells[4] == "0.0 %", cells  # every answer was 200
    shot(browser, screenshots, "live")
    sign_out(browser)


def test_a_publisher_sees_only_its_tenant(browser: webdriver.Chrome, world: World, screenshots: Path) -> None:
    sign_in(browser, world.url, world.publisher_other)
    tenants = wait_css(browser, "#tenants")
    assert world.other_tenant in tenants.text and world.tenant not in tenants.text
    assert not browser.find_elements(By.ID, "nav-audit")
    browser.get(f"{world.url}/console/tenants/{world.tenant}/models/mlp")
    assert "404" in wait_css(browser, "h1").text
    assert world.tenant in browser.find_element(By.ID, "error").text  # as the API says: not found
    browser.get(f"{world.url}/console/audit")
    assert "403" in wait_css(browser, "h1").text
    shot(browser, screenshots, "publisher-forbidden")
    sign_out(browser)


def test_a_publisher_may_not_move_production(browser: webdriver.Chrome, world: World) -> None:
    sign_in(browser, world.url, world.publisher)
    browser.get(f"{world.url}/console/tenants/{world.tenant}/models/mlp/aliases/production")
    browser.find_element(By.ID, "rollback").click()
    wait_css(browser, "#confirm").click()
    assert "only admins may move it" in wait_css(browser, "#error").text
    with ControlPlane(world.url, ADMIN_TOKEN) as admin:
        assert admin.models.get(world.tenant, "mlp").aliases["production"] == 1
    sign_out(browser)


def test_a_publisher_deletes_an_alias_after_confirming(
    browser: webdriver.Chrome, world: World, screenshots: Path
) -> None:
    with ControlPlane(world.url, ADMIN_TOKEN) as admin:
        admin.aliases.promote(world.tenant, "mlp", 2, alias="doomed")
    sign_in(browser, world.url, world.publisher)
    browser.get(f"{world.url}/console/tenants/{world.tenant}/models/mlp/aliases/doomed")
    wait_css(browser, "#delete-alias").click()
    confirm = wait_css(browser, "#confirm-form").find_element(By.XPATH, "..").text
    assert "Delete 'doomed'" in confirm and "points at v2" in confirm and "will get 404" in confirm
    shot(browser, screenshots, "confirm-delete-alias")
    browser.find_element(By.ID, "confirm").click()
    assert "Done: alias 'doomed' deleted." in wait_css(browser, "#done").text
    assert (
        "doomed" not in wait_css(browser, "#aliases").text
        and "production" in browser.find_element(By.ID, "aliases").text
    )
    with ControlPlane(world.url, ADMIN_TOKEN) as admin:
        assert "doomed" not in admin.models.get(world.tenant, "mlp").aliases
    sign_out(browser)


def test_an_admin_deletes_a_tenant_after_confirming(
    browser: webdriver.Chrome, world: World, screenshots: Path
) -> None:
    with ControlPlane(world.url, ADMIN_TOKEN) as admin:
        doomed = admin.tenants.create(unique_name("doomed")).name
    sign_in(browser, world.url, ADMIN_TOKEN)
    browser.get(f"{world.url}/console/tenants/{doomed}")
    wait_css(browser, "#delete-tenant").click()
    confirm = wait_css(browser, "#confirm-form").find_element(By.XPATH, "..").text
    assert f"Delete tenant {doomed}?" in confirm and "cannot be undone" in confirm
    shot(browser, screenshots, "confirm-delete-tenant")
    browser.find_element(By.ID, "confirm").click()
    assert f"Done: tenant '{doomed}' deleted." in wait_css(browser, "#done").text
    assert doomed not in wait_css(browser, "#tenants").text  # the listing is paged: others may be later
    with ControlPlane(world.url, ADMIN_TOKEN) as admin:
        assert doomed not in {t.name for t in admin.tenants.list()}
    sign_out(browser)
