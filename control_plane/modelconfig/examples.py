"""Example inputs uploaded with a TorchScript version (.npz or JSON), from which its signature is derived."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from control_plane.modelconfig.exceptions import InvalidArtifact
from control_plane.modelconfig.specs import DATATYPES, datatype_from_numpy, numpy_dtype

Array = npt.NDArray[Any]
HOW = (
    "upload an `example` file with the version: an .npz written by numpy.savez(path, x=array, ...) or JSON "
    'such as {"x": [[0.1, 0.2, 0.3, 0.4]]} or {"x": {"datatype": "FP32", "shape": [1, 4], "data": [...]}}, '
    "one entry per forward argument, in order"
)


def read_example(path: Path) -> dict[str, Array]:
    """Example tensors by name, in the file's order; InvalidArtifact saying how to write one otherwise."""
    arrays = _read_npz(path) if zipfile.is_zipfile(path) else _read_json(path)
    if not arrays:
        raise InvalidArtifact(f"the example holds no tensors; {HOW}")
    for name, array in arrays.items():
        if datatype_from_numpy(array.dtype) is None:
            raise InvalidArtifact(
                f"example input '{name}' has dtype {array.dtype}, which Triton cannot carry"
            )
    return arrays


def _read_npz(path: Path) -> dict[str, Array]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InvalidArtifact(f"the example .npz cannot be read ({exc}); {HOW}") from exc


def _read_json(path: Path) -> dict[str, Array]:
    try:
        document = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArtifact(f"the example is neither an .npz file nor JSON; {HOW}") from exc
    if isinstance(document, dict) and isinstance(document.get("inputs"), dict):
        document = document["inputs"]
    if not isinstance(document, dict):
        raise InvalidArtifact(f"the example JSON must be an object of named tensors; {HOW}")
    return {str(name): _json_tensor(str(name), value) for name, value in document.items()}


def _json_tensor(name: str, value: Any) -> Array:
    try:
        if isinstance(value, dict):
            return _typed(name, value)
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidArtifact(f"example input '{name}' is not a rectangular array: {exc}") from exc
    if array.dtype.kind == "f":
        return array.astype(np.float32)  # JSON numbers with a fraction: float32, as models mostly take
    if array.dtype.kind in "iub":
        return array.astype(np.int64) if array.dtype.kind != "b" else array
    raise InvalidArtifact(f"example input '{name}' must hold numbers or true/false; {HOW}")


def _typed(name: str, value: dict[str, Any]) -> Array:
    datatype = value.get("datatype")
    if datatype not in DATATYPES or datatype in ("BYTES", "BF16"):
        raise InvalidArtifact(f"example input '{name}' has datatype {datatype!r}; use a numeric datatype")
    array = np.asarray(value.get("data"), dtype=numpy_dtype(datatype))
    shape = value.get("shape")
    return array.reshape(shape) if shape is not None else array
