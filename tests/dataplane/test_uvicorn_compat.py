"""The start-up check of uvicorn's internals: passes on the installed uvicorn, fails clearly otherwise."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from packaging.requirements import Requirement
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from control_plane.app import create_app
from control_plane.dataplane.fastpath import fast_path_protocol
from control_plane.dataplane.uvicorn_compat import SUPPORTED, UvicornIncompatible, check_uvicorn
from control_plane.settings import Settings

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_uvicorn_passes_and_is_in_the_pinned_range() -> None:
    assert check_uvicorn() == uvicorn.__version__
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pinned = next(Requirement(d) for d in dependencies if Requirement(d).name == "uvicorn")
    assert str(pinned.specifier) == str(Requirement(f"uvicorn{SUPPORTED}").specifier)
    assert pinned.specifier.contains(uvicorn.__version__)


@pytest.mark.parametrize("name", ["_start_asgi_task", "on_response_complete", "timeout_keep_alive_handler"])
def test_a_missing_method_is_named(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.delattr(HttpToolsProtocol, name)
    with pytest.raises(UvicornIncompatible, match=rf"uvicorn {uvicorn.__version__} lacks .*{name}"):
        check_uvicorn()


def test_a_missing_status_line_table_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(httptools_impl, "STATUS_LINE")
    with pytest.raises(UvicornIncompatible, match="STATUS_LINE"):
        check_uvicorn()


@pytest.mark.parametrize("name", ["pipeline", "flow", "server_state", "cycle"])
def test_missing_connection_state_is_named(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    original = HttpToolsProtocol.__init__

    def without(self: HttpToolsProtocol, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        delattr(self, name)

    monkeypatch.setattr(HttpToolsProtocol, "__init__", without)
    with pytest.raises(UvicornIncompatible, match=rf"HttpToolsProtocol\(\)\.{name}\b"):
        check_uvicorn()


def test_a_changed_constructor_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def changed(self: HttpToolsProtocol, config: uvicorn.Config) -> None:
        """A constructor without the arguments the fast path's base class is built with."""

    monkeypatch.setattr(HttpToolsProtocol, "__init__", changed)
    with pytest.raises(UvicornIncompatible, match=r"HttpToolsProtocol\(config, .*unexpected keyword"):
        check_uvicorn()


def test_the_fast_path_runs_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(Settings(admin_token="x"))
    assert issubclass(fast_path_protocol(app), HttpToolsProtocol)
    monkeypatch.delattr(HttpToolsProtocol, "_start_asgi_task")
    with pytest.raises(UvicornIncompatible, match="_start_asgi_task"):
        fast_path_protocol(app)


def test_cycle_and_flow_state_the_fast_path_reads_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    def bare(self: object, *args: Any, **kwargs: Any) -> None:
        """A constructor that sets none of the attributes the fast path reads."""

    monkeypatch.setattr(httptools_impl.RequestResponseCycle, "__init__", bare)
    with pytest.raises(UvicornIncompatible, match=r"RequestResponseCycle\(\)\.response_started"):
        check_uvicorn()
