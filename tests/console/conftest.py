"""One served control plane with a deployed model (for the package), and one headless chromium.

The browser is Debian's `chromium` driven through `chromium-driver` (scripts/test installs both). Its
host resolver resolves nothing but 127.0.0.1, so any page that reached for the internet would fail to
load it, and its performance log records every request for the tests to check.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from control_plane.client import ControlPlane
from tests.fixtures_triton import RunningTriton
from tests.support import model_files
from tests.support.api import ADMIN_TOKEN, Api
from tests.support.builders import unique_name
from tests.support.served import serve, stack_settings


@dataclass(frozen=True)
class World:
    """The served app, and what the console tests look at: tenant A's model with two ready versions."""

    api: Api
    url: str
    tenant: str
    other_tenant: str
    model: str
    publisher_other: str  # a publisher of the other tenant
    consumer: str  # a consumer of tenant A
    publisher: str  # a publisher of tenant A
    predictions: int


def _executable(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/test installs Debian's chromium and chromium-driver")
    return found


@pytest.fixture(scope="package")
def world(
    database_url: str, s3_endpoint: str, triton: RunningTriton, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """The app on a free port; set up through the SDK: tenants, keys, `mlp` v1 (production) and v2."""
    assert triton.repository is not None
    settings = stack_settings(
        database_url=database_url,
        s3_endpoint=s3_endpoint,
        triton_http_url=triton.http_url,
        triton_grpc_url=triton.process.grpc_url,
        repository=triton.repository,
        grpc_port=0,
    )
    root = tmp_path_factory.mktemp("console-models")
    with serve(settings) as api:
        url = str(api.client.base_url).rstrip("/")
        with ControlPlane(url, ADMIN_TOKEN) as admin:
            tenant, other = (
                admin.tenants.create(unique_name("web")).name,
                admin.tenants.create(unique_name("b")).name,
            )
            publisher = admin.keys.create(tenant, role="publisher").key
            consumer = admin.keys.create(tenant, role="consumer").key
            publisher_other = admin.keys.create(other, role="publisher").key
            admin.models.create(tenant, name="mlp", format="onnx")
            for seed in (1, 2):
                admin.versions.upload(tenant, "mlp", model_files.onnx_mlp(root / f"m{seed}.onnx", seed=seed))
            admin.aliases.promote(tenant, "mlp", 1)  # loads v1 and waits until it is ready
            admin.aliases.promote(tenant, "mlp", 2, alias="staging")
        with ControlPlane(url, consumer) as client:
            for _ in range(5):
                client.predict("mlp", {"x": [[0.1, 0.2, 0.3, 0.4]]})
        yield World(
            api=api,
            url=url,
            tenant=tenant,
            other_tenant=other,
            model="mlp",
            publisher_other=publisher_other,
            consumer=consumer,
            publisher=publisher,
            predictions=5,
        )


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless chromium that resolves no host but 127.0.0.1 and logs every network request."""
    options = webdriver.ChromeOptions()
    options.binary_location = _executable("chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_executable("chromedriver")))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each page's screenshot goes (CP_CONSOLE_SCREENSHOTS, else a temp folder)."""
    given = os.environ.get("CP_CONSOLE_SCREENSHOTS")
    folder = Path(given) if given else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Request:
    """One request the browser made: its URL and, if it never reached the network, why."""

    url: str
    blocked: str | None = None  # Chrome's blockedReason, e.g. "csp"
    error: str | None = None


def requested(driver: webdriver.Chrome) -> list[Request]:
    """Every request the browser made since the last call (from the performance log)."""
    found: dict[str, Request] = {}
    for entry in driver.get_log("performance"):  # type: ignore[no-untyped-call]
        message: dict[str, Any] = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message.get("method") == "Network.requestWillBeSent":
            found[params["requestId"]] = Request(url=str(params["request"]["url"]))
        elif message.get("method") == "Network.loadingFailed" and params.get("requestId") in found:
            found[params["requestId"]].blocked = params.get("blockedReason")
            found[params["requestId"]].error = params.get("errorText")
    return list(found.values())
