"""What an uploaded file is, from its content: ONNX, TorchScript, a torch.save pickle, Python, an archive,
and what else people bring that no backend here serves (scikit-learn pickles, torch.export programs,
safetensors weights, GGUF, TensorFlow and Keras files).

Used to name a mismatch ("this is a TorchScript archive, the model was created with format onnx") instead
of letting a parser fail on it, and to tell what to do instead.
"""

from __future__ import annotations

import ast
import bz2
import gzip
import json
import lzma
import tarfile
import zipfile
from pathlib import Path
from typing import Literal

from control_plane.modelconfig.exceptions import InvalidArtifact

Kind = Literal[
    "onnx",
    "torchscript",
    "torch_pickle",
    "python",
    "onnx_archive",
    "zip",
    "tar",
    "sklearn_pickle",
    "torch_export",
    "safetensors",
    "gguf",
    "tensorflow",
    "unknown",
]
_PICKLE_PROTOCOLS = {2, 3, 4, 5}
_PYTHON_SNIFF_BYTES = 1 << 20
_PICKLE_SNIFF_BYTES = 64 << 10  # a pickle names its first class within its first bytes
_SAFETENSORS_HEADER_BYTES = 4 << 20  # ~100 bytes a tensor: tens of thousands of them
UNSERVED: frozenset[Kind] = frozenset({"sklearn_pickle", "torch_export", "safetensors", "gguf", "tensorflow"})
_TENSORFLOW_FILES = ("saved_model.pb", "saved_model.pbtxt", "model.weights.h5")

DESCRIPTIONS: dict[Kind, str] = {
    "onnx": "an ONNX model",
    "torchscript": "a TorchScript archive",
    "torch_pickle": "a file saved with torch.save (a state_dict or a pickled module), not TorchScript",
    "python": "Python source",
    "onnx_archive": "an archive holding an ONNX model",
    "zip": "a zip archive",
    "tar": "a tar archive",
    "sklearn_pickle": "a pickled scikit-learn (or XGBoost / LightGBM) model",
    "torch_export": "a torch.export program (.pt2)",
    "safetensors": "a safetensors file (weights only, without the graph that runs them)",
    "gguf": "a GGUF model (llama.cpp)",
    "tensorflow": "a TensorFlow or Keras model (SavedModel, .keras, HDF5 or TFLite)",
    "unknown": "not a model file this service knows",
}
_TO_ONNX = "upload the .onnx file (to a model with format onnx)"
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
    "sklearn_pickle": (
        "convert it to ONNX with skl2onnx (skl2onnx.to_onnx(model, X[:1].astype('float32'), "
        "options={'zipmap': False}) for a classifier; onnxmltools for XGBoost and LightGBM) and "
        f"{_TO_ONNX}; pickles are never loaded here (unpickling runs any code they hold)"
    ),
    "torch_export": (
        "export the module with torch.onnx.export(model, args, 'model.onnx', dynamo=True) and "
        f"{_TO_ONNX}, or save TorchScript with torch.jit.trace(model, example).save(path) for a model with "
        "format torchscript"
    ),
    "safetensors": (
        f"export the model itself: torch.onnx.export(model, args, 'model.onnx') and {_TO_ONNX}, or "
        "torch.jit.trace(model, example).save(path) for a model with format torchscript"
    ),
    "gguf": f"no backend here runs GGUF: export the model to ONNX and {_TO_ONNX}",
    "tensorflow": (
        "convert it to ONNX with tf2onnx (python -m tf2onnx.convert --saved-model DIR --output model.onnx, "
        f"or --keras / --tflite) and {_TO_ONNX}"
    ),
}


def sniff(path: Path) -> Kind:
    """The kind of file at `path`, from its first bytes and, for archives, their member names."""
    with path.open("rb") as f:
        head = f.read(_PICKLE_SNIFF_BYTES)
    if zipfile.is_zipfile(path):
        return _zip_kind(path)
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in _PICKLE_PROTOCOLS:
        if any(name in head for name in (b"sklearn.", b"xgboost.", b"lightgbm.")):
            return "sklearn_pickle"  # pickle.dump or joblib.dump of an estimator
        return "torch_pickle"  # torch.save with _use_new_zipfile_serialization=False, or plain pickle
    if _is_safetensors(path, head):  # before ONNX: its 8-byte header length may start with 0x08
        return "safetensors"
    if head[:1] == b"\x08":  # ModelProto field 1 (ir_version), what every ONNX writer puts first
        return "onnx"
    # Neither of those can be Python source (a NUL or a backspace byte); the magic numbers below can.
    if _is_python(path):
        return "python"
    if head[:4] == b"GGUF":
        return "gguf"
    if head[:8] == b"\x89HDF\r\n\x1a\n" or head[4:8] == b"TFL3":  # Keras HDF5, TFLite flatbuffer
        return "tensorflow"
    if _is_tar(path, head):
        names = tar_names(path)
        if any(n.endswith(".onnx") for n in names):
            return "onnx_archive"
        return "tensorflow" if any(n.rsplit("/", 1)[-1] in _TENSORFLOW_FILES for n in names) else "tar"
    return "unknown"


def _is_safetensors(path: Path, head: bytes) -> bool:
    """An 8-byte little-endian header length, then that many bytes of a JSON object."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    size = int.from_bytes(head[:8], "little")
    if not 2 <= size <= min(_SAFETENSORS_HEADER_BYTES, path.stat().st_size - 8):
        return False
    with path.open("rb") as f:
        f.seek(8)
        header = f.read(size)
    try:
        return isinstance(json.loads(header), dict)
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth: not safetensors
        return False


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
    if any(p[-1] == "archive_format" for p in parts) and any("models" in p[:-1] for p in parts):
        return "torch_export"  # torch.export.save: <name>/archive_format, <name>/models/<name>.json
    if any(p[-1] in _TENSORFLOW_FILES for p in parts):
        return "tensorflow"  # a zipped SavedModel folder, or a .keras file
    return "zip"


def _is_tar(path: Path, head: bytes) -> bool:
    """A tar archive, plain or compressed (gzip, bzip2, xz): its first header block says "ustar" (every
    tar writer of this century; `tarfile.is_tarfile`, which also takes pre-POSIX archives, read a file of
    zeros as an empty archive after decompressing it whole as xz, 36 s for 100 MB)."""
    try:
        block = _first_block(path, head)
    except (OSError, EOFError, lzma.LZMAError):
        return False
    return len(block) == 512 and block[257:262] == b"ustar"


def _first_block(path: Path, head: bytes) -> bytes:
    """The first 512 bytes of the file, decompressed if it is gzip, bzip2 or xz (as tarfile reads it)."""
    if head[:2] == b"\x1f\x8b":
        with gzip.GzipFile(path) as gz:
            return gz.read(512)
    if head[:3] == b"BZh":
        with bz2.BZ2File(path) as bz:
            return bz.read(512)
    if head[:6] == b"\xfd7zXZ\x00":
        with lzma.LZMAFile(path) as xz:
            return xz.read(512)
    return head[:512]


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
    if kind in UNSERVED:
        raise InvalidArtifact(f"this is {DESCRIPTIONS[kind]}, which this deployment does not serve; {fix}")
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
