"""The documentation in docs/ and the README: every setting and every API path documented, and no link
that points outside the repository or at a file that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from control_plane.app import create_app
from control_plane.settings import Settings
from tests.deploy.manifests import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_docs_exist() -> None:
    assert {p.name for p in DOCS.glob("*.md")} >= {
        "architecture.md",
        "contract.md",
        "settings.md",
        "deploy.md",
    }


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"`(CP_[A-Z0-9_]+)`", (DOCS / "settings.md").read_text()))
    missing = {f"CP_{name.upper()}" for name in Settings.model_fields} - documented
    assert not missing, f"settings missing from docs/settings.md: {sorted(missing)}"


def test_every_api_path_is_in_the_contract() -> None:
    contract = (DOCS / "contract.md").read_text()
    paths = create_app(Settings(database_url="sqlite://")).openapi()["paths"]
    api = [p for p in paths if p.startswith(("/v1", "/v2")) or p == "/metrics"]
    assert "/v1/predict/{model}" in api and "/v2/models/{model}/infer" in api
    missing = [
        p for p in api if f"`{p}`" not in contract and f" {p}`" not in contract and f"{p}," not in contract
    ]
    assert not missing, f"paths missing from docs/contract.md: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_stay_inside_the_repository_and_resolve(page: Path) -> None:
    text = page.read_text()
    assert "shared/DESIGN" not in text and "/work/" not in text
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+://|^#|^mailto:", target):
            continue
        resolved = (page.parent / target.split("#")[0]).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: {target} points outside the repository"
        assert resolved.exists(), f"{page.name}: {target} does not exist"
