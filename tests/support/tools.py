"""Command-line tools the tests run that scripts/test installs outside the venv."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def promtool() -> str:
    """Prometheus' promtool (scripts/test unpacks Debian's prometheus package into .cache/promtool)."""
    tool = os.environ.get("CP_TEST_PROMTOOL") or shutil.which("promtool")
    assert tool and Path(tool).is_file(), "promtool is missing: scripts/test unpacks it into .cache/promtool"
    return tool
