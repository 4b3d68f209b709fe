"""Find the Triton server bundled with nvidia-pytriton and prepare a backend directory for it."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from control_plane.tritonserver.exceptions import TritonNotInstalled

STUB_NAME = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonDistribution:
    """Paths of one bundled Triton installation."""

    binary: Path
    backends_dir: Path
    stub: Path
    libs_dir: Path
    caches_dir: Path

    @property
    def python_bin_dir(self) -> Path:
        """The running interpreter's bin dir; first on PATH so the stub uses this environment."""
        return Path(sys.executable).parent


def _pytriton_root() -> Path:
    # find_spec locates the package without importing it (pytriton's modules are heavy).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonNotInstalled(
            "nvidia-pytriton is not installed; install the 'embedded' extra to get a bundled Triton"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def locate_tritonserver(*, python_version: tuple[int, int] | None = None) -> TritonDistribution:
    """Paths of the bundled tritonserver and the Python-backend stub for this (or the given) Python."""
    root = _pytriton_root() / "tritonserver"
    major, minor = python_version or sys.version_info[:2]
    dist = TritonDistribution(
        binary=root / "bin" / "tritonserver",
        backends_dir=root / "backends",
        stub=root / "python_backend_stubs" / f"{major}.{minor}" / STUB_NAME,
        libs_dir=root.parent.parent / "nvidia_pytriton.libs",
        caches_dir=root / "caches",
    )
    if not os.access(dist.binary, os.X_OK):
        raise TritonNotInstalled(f"no executable tritonserver at {dist.binary}")
    if not (dist.backends_dir / "python" / "libtriton_python.so").is_file():
        raise TritonNotInstalled(f"no Python backend under {dist.backends_dir}")
    if not dist.stub.is_file():
        raise TritonNotInstalled(f"nvidia-pytriton ships no Python-backend stub for Python {major}.{minor}")
    return dist


def _up_to_date(source: Path, target: Path) -> bool:
    try:
        src, dst = source.stat(), target.stat()
    except FileNotFoundError:
        return False
    return src.st_size == dst.st_size and src.st_mtime_ns == dst.st_mtime_ns


def _copy_file(source: Path, target: Path) -> None:
    """Copy through a temporary file and rename, so a running Triton never sees a half-written file."""
    if _up_to_date(source, target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        shutil.copy2(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_backend_dir(dist: TritonDistribution, target: Path) -> Path:
    """Copy the bundled backends and the stub into `target` (only what is missing or stale)."""
    for source in dist.backends_dir.rglob("*"):
        if source.is_file() and "__pycache__" not in source.parts:
            _copy_file(source, target / source.relative_to(dist.backends_dir))
    _copy_file(dist.stub, target / "python" / STUB_NAME)
    return target
