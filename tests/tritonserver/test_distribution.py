"""Locating the bundled Triton and preparing a backend directory for it."""

from __future__ import annotations

import filecmp
import os
import sys
from pathlib import Path

import pytest

from control_plane.tritonserver import TritonNotInstalled, locate_tritonserver, prepare_backend_dir
from control_plane.tritonserver.distribution import STUB_NAME


def test_locate_finds_binary_backend_and_stub_for_this_python() -> None:
    dist = locate_tritonserver()
    assert dist.binary.name == "tritonserver" and os.access(dist.binary, os.X_OK)
    assert (dist.backends_dir / "python" / "libtriton_python.so").is_file()
    assert dist.stub.is_file() and dist.stub.parent.name == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert dist.libs_dir.is_dir()
    assert (dist.caches_dir / "local").is_dir()
    assert dist.python_bin_dir == Path(sys.executable).parent


def test_locate_rejects_a_python_without_stub() -> None:
    with pytest.raises(TritonNotInstalled, match=r"no Python-backend stub for Python 3\.99"):
        locate_tritonserver(python_version=(3, 99))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_prepare_backend_dir_is_idempotent_and_repairs(tmp_path: Path) -> None:
    dist = locate_tritonserver()
    target = tmp_path / "backends"

    assert prepare_backend_dir(dist, target) == target
    stub = target / "python" / STUB_NAME
    library = target / "python" / "libtriton_python.so"
    assert filecmp.cmp(stub, dist.stub, shallow=False)
    assert os.access(stub, os.X_OK)
    assert filecmp.cmp(library, dist.backends_dir / "python" / "libtriton_python.so", shallow=False)
    assert not list(target.rglob("__pycache__"))
    first = _snapshot(target)

    prepare_backend_dir(dist, target)
    assert _snapshot(target) == first  # nothing rewritten

    stub.write_bytes(b"not a stub")
    library.unlink()
    prepare_backend_dir(dist, target)
    assert filecmp.cmp(stub, dist.stub, shallow=False)
    assert library.is_file()
    assert not [p for p in target.rglob(".*")]  # no temporary files left
