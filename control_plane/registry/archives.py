"""ONNX models with external data, uploaded as a zip or tar archive: unpacked safely, laid out for Triton."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO, cast

from control_plane.modelconfig.exceptions import InvalidArtifact

MAX_MEMBERS = 10_000
ONNX_NAME = "model.onnx"


def check_member(name: str) -> str:
    """A member path that stays inside the archive's folder; InvalidArtifact otherwise."""
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise InvalidArtifact(f"unsafe path in the archive: {name!r}")
    return name


def unpack(path: Path, destination: Path, *, max_bytes: int) -> None:
    """Extract a zip or tar archive into `destination`: regular files only, paths checked, size bounded."""
    destination.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(path):
        _unpack_zip(path, destination, max_bytes=max_bytes)
    else:
        _unpack_tar(path, destination, max_bytes=max_bytes)


def _unpack_zip(path: Path, destination: Path, *, max_bytes: int) -> None:
    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        _check_sizes([(info.filename, info.file_size) for info in members], max_bytes=max_bytes)
        for info in members:
            target = destination / check_member(info.filename)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, target.open("wb") as out:
                _copy_bounded(cast(BinaryIO, source), out, limit=info.file_size, name=info.filename)


def _unpack_tar(path: Path, destination: Path, *, max_bytes: int) -> None:
    try:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
            for member in members:
                if not (member.isfile() or member.isdir()):
                    raise InvalidArtifact(f"the archive member {member.name!r} is not a regular file")
            files = [m for m in members if m.isfile()]
            _check_sizes([(m.name, m.size) for m in files], max_bytes=max_bytes)
            for member in files:
                target = destination / check_member(member.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                if source is None:
                    raise InvalidArtifact(f"the archive member {member.name!r} cannot be read")
                with source, target.open("wb") as out:
                    _copy_bounded(cast(BinaryIO, source), out, limit=member.size, name=member.name)
    except (tarfile.TarError, EOFError) as exc:
        raise InvalidArtifact(f"the tar archive cannot be read: {exc}") from exc


def _check_sizes(members: list[tuple[str, int]], *, max_bytes: int) -> None:
    if len(members) > MAX_MEMBERS:
        raise InvalidArtifact(f"the archive has {len(members)} files, more than {MAX_MEMBERS}")
    total = sum(size for _, size in members)
    if total > max_bytes:
        raise InvalidArtifact(f"the archive unpacks to {total} bytes, over the upload limit of {max_bytes}")


def _copy_bounded(source: BinaryIO, out: BinaryIO, *, limit: int, name: str) -> None:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > limit:
            raise InvalidArtifact(f"the archive member {name!r} is larger than it declares")
        out.write(chunk)


def onnx_model_file(root: Path) -> Path:
    """The one .onnx file of an unpacked archive (or the one named model.onnx); InvalidArtifact otherwise."""
    found = sorted(p for p in root.rglob("*.onnx") if p.is_file())
    if len(found) > 1:
        named = [p for p in found if p.name == ONNX_NAME]
        found = named if len(named) == 1 else found
    if len(found) != 1:
        listed = ", ".join(str(p.relative_to(root)) for p in found) or "none"
        raise InvalidArtifact(
            f"the archive must hold exactly one .onnx file (or one named {ONNX_NAME}) with its external "
            f"data files beside it; found {listed}"
        )
    return found[0]


def layout(model_file: Path) -> list[tuple[str, Path]]:
    """Files for a version directory: the model as model.onnx, the rest as placed beside it."""
    root = model_file.parent
    files = [(ONNX_NAME, model_file)]
    for path in sorted(root.rglob("*")):
        if path.is_file() and path != model_file:
            relative = PurePosixPath(*path.relative_to(root).parts).as_posix()
            if relative != ONNX_NAME:
                files.append((relative, path))
    return files
