"""The vendored front-end files are the ones the README says, and no page names another origin."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import control_plane.console

CONSOLE = Path(control_plane.console.__file__).parent
VENDOR = CONSOLE / "static" / "vendor"


def test_vendored_files_match_their_recorded_sha256() -> None:
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (VENDOR / "README.md").read_text(), re.M)
    assert len(rows) == 5, rows
    for name, digest in rows:
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    for folder in ("htmx", "swagger-ui", "redoc"):
        assert (VENDOR / folder / "LICENSE").is_file(), folder


def test_templates_and_stylesheet_name_no_other_origin() -> None:
    files = [*CONSOLE.glob("templates/*.html"), CONSOLE / "static" / "console.css"]
    assert len(files) > 10
    for path in files:
        text = path.read_text()
        assert not re.search(r"(src|href)=\"(https?:)?//", text), path
        assert "<script>" not in text and " on" + "click=" not in text, (
            path
        )  # the console's CSP forbids inline code
