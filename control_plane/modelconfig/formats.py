"""What an uploaded file is, from its content: ONNX, TorchScript, a torch.save pickle, Python, an archive.

Used to name a mismatch ("this is a TorchScript archive, the model was created with format onnx") instead
of letting a parser fail on it, and to tell what to do instead.
"""

from __future__ import annotations

import ast
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

from control_plane.modelconfig.exceptions import InvalidArtifact

Kind = Literal["onnx", "torchscript", "torch_pickle", "python", "onnx_archive", "zip", "tar", "unknown"]
_PICKLE_PROTOCOLS = {2, 3, 4, 5}
_PYTHON_SNIFF_BYTES = 1 << 20

DESCRIPTIONS: dict[Kind, str] = {
    "onnx": "an ONNX model",
    "torchscript": "a TorchScript archive",
    "torch_pickle": "a file saved with torch.save (a state_dict or a pickled module), not TorchScript",
    "python": "Python source",
    "onnx_archive": "an archive holding an ONNX model",
    "zip": "a zip archive",
    "tar": "a tar archive",
    "unknown": "not a model file this service knows",
}
# What to do with a file of one kind uploaded to a model of another format.
FIXES: dict[Kind, str] = {
    "onnx": "register a model with format onnx and upload it there",
    "onnx_archive": "register a model with format onnx and upload it there",
    "torchscript": "register a model with format torchscript and upload it there",
    "torch_pickle": (
        "export the module with torch.jit.trace(model, example) or torch.jit.script(model) and upload the "
        "file written by .save(path) (or export it to ONNX with torch.onnx.export)"
    ),
    "python": "register a model with format python (admins only) and upload it there",
}


def sniff(path: Path) -> Kind:
    """The kind of file at `path`, from its first bytes and, for archives, their member names."""
    with path.open("rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path):
        return _zip_kind(path)
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in _PICKLE_PROTOCOLS:
        return "torch_pickle"  # torch.save with _use_new_zipfile_serialization=False, or plain pickle
    if head[:1] == b"\x08":  # ModelProto field 1 (ir_version), what every ONNX writer puts first
        return "onnx"
    if _is_tar(path):
        return "onnx_archive" if any(n.endswith(".onnx") for n in tar_names(path)) else "tar"
    if _is_python(path):
        return "python"
    return "unknown"


def _zip_kind(path: Path) -> Kind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "unknown"
    # torch.jit.save writes <root>/code/... and <root>/constants.pkl; torch.save only <root>/data.pkl.
    parts = [name.split("/") for name in names]
    if any(len(p) >= 3 and p[1] == "code" for p in parts) or any(p[-1] == "constants.pkl" for p in parts):
        return "torchscript"
    if any(p[-1] == "data.pkl" for p in parts):
        return "torch_pickle"
    if "model.py" in names:  # a Python-backend model, which may bundle other files (an .onnx too)
        return "python"
    if any(name.endswith(".onnx") for name in names):
        return "onnx_archive"
    return "zip"


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def tar_names(path: Path) -> list[str]:
    """Member names of a (possibly compressed) tar archive; InvalidArtifact if it cannot be read."""
    try:
        with tarfile.open(path) as archive:
            return archive.getnames()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InvalidArtifact(f"the tar archive cannot be read: {exc}") from exc


def _is_python(path: Path) -> bool:
    if path.stat().st_size > _PYTHON_SNIFF_BYTES:
        return False
    try:
        ast.parse(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, SyntaxError, ValueError):
        return False
    return True


def check_kind(path: Path, *, model_format: str) -> Kind:
    """The file's kind if the model's format can take it; InvalidArtifact naming the mismatch otherwise."""
    kind = sniff(path)
    accepted: dict[str, tuple[Kind, ...]] = {
        "onnx": ("onnx", "onnx_archive", "unknown"),
        "torchscript": ("torchscript",),
        "python": ("python",),
    }
    if kind in accepted.get(model_format, ()):
        return kind
    if model_format == "python" and kind in ("zip", "unknown"):
        return kind  # check_python_model says what is missing
    if model_format == "torchscript" and kind == "torch_pickle":
        raise InvalidArtifact(
            "this file is a state_dict (or a pickled module) saved with torch.save, not TorchScript; "
            "export with torch.jit.trace(model, example_inputs) or torch.jit.script(model) and upload the "
            "file written by .save(path)"
        )
    fix = FIXES.get(kind)
    hint = f"; {fix}" if fix else _format_hint(model_format)
    raise InvalidArtifact(
        f"this is {DESCRIPTIONS[kind]}, the model was created with format {model_format}{hint}"
    )


def _format_hint(model_format: str) -> str:
    wanted = {
        "onnx": "an .onnx file, or a zip/tar archive with the .onnx file and its external data files",
        "torchscript": "a file written by torch.jit.save (or ScriptModule.save)",
        "python": "a model.py, or a zip with model.py at its top",
    }
    return f"; upload {wanted.get(model_format, 'a model file')}"
