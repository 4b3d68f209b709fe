"""Stage an upload on local disk (hashing and size-limiting as it streams) and inspect the artifact."""

from __future__ import annotations

import ast
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from control_plane.artifacts import ArtifactTooLarge
from control_plane.modelconfig.examples import HOW, read_example
from control_plane.modelconfig.exceptions import InvalidArtifact, InvalidModelSpec
from control_plane.modelconfig.formats import check_kind
from control_plane.modelconfig.signature import check_declared, read_onnx_signature
from control_plane.modelconfig.specs import Signature
from control_plane.modelconfig.torchscript import signature_from_example, validate_torchscript
from control_plane.registry.archives import check_member, onnx_model_file, unpack

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


def inspect_artifact(
    staged: StagedUpload,
    *,
    model_format: str,
    declared: Signature | None,
    example: Path | None = None,
    workdir: Path,
    max_bytes: int,
) -> Signature:
    """Validate the artifact for its format (named if it is another format) and return its signature."""
    kind = check_kind(staged.path, model_format=model_format)
    if example is not None and model_format != "torchscript":
        raise InvalidModelSpec(
            f"an example file is only used to derive TorchScript signatures; {model_format} models "
            + ("state their own signature" if model_format == "onnx" else "need declared inputs and outputs")
        )
    if model_format == "onnx":
        model_file = staged.path
        if kind == "onnx_archive":
            unpack(staged.path, workdir / "unpacked", max_bytes=max_bytes)
            model_file = onnx_model_file(workdir / "unpacked")
        return check_declared(declared=declared, actual=read_onnx_signature(model_file))
    if model_format == "torchscript":
        if declared is not None:
            validate_torchscript(staged.path, signature=declared)
            return declared
        if example is None:
            raise InvalidModelSpec(
                f"a TorchScript file does not state its inputs and outputs: {HOW}; or declare 'inputs' and "
                "'outputs' on the model"
            )
        return signature_from_example(staged.path, example=read_example(example))
    if declared is None:
        raise InvalidModelSpec(f"{model_format} models need declared inputs and outputs")
    check_python_model(staged.path)
    return declared


def check_python_model(path: Path) -> None:
    """A `model.py`, or a zip with `model.py` at its top, that defines TritonPythonModel."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            for name in names:
                check_member(name)
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
        return [(check_member(i.filename), archive.read(i)) for i in archive.infolist() if not i.is_dir()]


def _check_python_source(source: bytes) -> None:
    try:
        tree = ast.parse(source.decode("utf-8"), filename=PYTHON_ENTRY)
    except (UnicodeDecodeError, SyntaxError) as exc:
        raise InvalidArtifact(f"model.py does not parse: {exc}") from exc
    classes = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
    if "TritonPythonModel" not in classes:
        raise InvalidArtifact("model.py defines no class TritonPythonModel")
