"""Stage an upload on local disk (hashing and size-limiting as it streams) and inspect the artifact."""

from __future__ import annotations

import ast
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from control_plane.artifacts import ArtifactTooLarge
from control_plane.modelconfig.exceptions import InvalidArtifact, InvalidModelSpec
from control_plane.modelconfig.signature import check_declared, read_onnx_signature, validate_torchscript
from control_plane.modelconfig.specs import Signature

CHUNK = 1024 * 1024
PYTHON_ENTRY = "model.py"


@dataclass(frozen=True)
class StagedUpload:
    """An uploaded artifact on local disk with its digest."""

    path: Path
    sha256: str
    size_bytes: int


def stage_upload(stream: BinaryIO, *, destination: Path, max_bytes: int) -> StagedUpload:
    """Copy the upload to `destination` in chunks, hashing it; 413 past `max_bytes`."""
    digest = hashlib.sha256()
    size = 0
    with destination.open("wb") as out:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise ArtifactTooLarge(f"artifact is larger than the limit of {max_bytes} bytes")
            digest.update(chunk)
            out.write(chunk)
    if size == 0:
        raise InvalidArtifact("the uploaded file is empty")
    return StagedUpload(path=destination, sha256=digest.hexdigest(), size_bytes=size)


def inspect_artifact(staged: StagedUpload, *, model_format: str, declared: Signature | None) -> Signature:
    """Validate the artifact for its format and return the effective signature."""
    if model_format == "onnx":
        return check_declared(declared=declared, actual=read_onnx_signature(staged.path))
    if declared is None:
        raise InvalidModelSpec(f"{model_format} models need declared inputs and outputs")
    if model_format == "torchscript":
        validate_torchscript(staged.path, signature=declared)
    else:
        check_python_model(staged.path)
    return declared


def check_python_model(path: Path) -> None:
    """A `model.py`, or a zip with `model.py` at its top, that defines TritonPythonModel."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            for name in names:
                _check_member(name)
            if PYTHON_ENTRY not in names:
                raise InvalidArtifact("the zip archive has no model.py at its top level")
            source = archive.read(PYTHON_ENTRY)
    else:
        source = path.read_bytes()
    _check_python_source(source)


def python_model_members(path: Path) -> list[tuple[str, bytes]]:
    """The files of a Python-backend model: (relative path, content)."""
    if not zipfile.is_zipfile(path):
        return [(PYTHON_ENTRY, path.read_bytes())]
    with zipfile.ZipFile(path) as archive:
        return [(_check_member(i.filename), archive.read(i)) for i in archive.infolist() if not i.is_dir()]


def _check_member(name: str) -> str:
    parts = name.rstrip("/").split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise InvalidArtifact(f"unsafe path in the zip archive: {name!r}")
    return name


def _check_python_source(source: bytes) -> None:
    try:
        tree = ast.parse(source.decode("utf-8"), filename=PYTHON_ENTRY)
    except (UnicodeDecodeError, SyntaxError) as exc:
        raise InvalidArtifact(f"model.py does not parse: {exc}") from exc
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    if "TritonPythonModel" not in classes:
        raise InvalidArtifact("model.py defines no class TritonPythonModel")
