"""Python-backend runners (model.py templates) for ONNX and TorchScript artifacts, shipped as package data."""

from __future__ import annotations

from importlib import resources
from typing import Literal

RUNNER_FILENAME = "model.py"
_TEMPLATES = {"onnx": "onnx_runner.py", "torchscript": "torchscript_runner.py"}


COMMON_IMPORT = "from control_plane.runners._common import BatchingRunner\n"


def runner_source(model_format: Literal["onnx", "torchscript"]) -> str:
    """Source of the Triton Python-backend model.py that serves artifacts of `model_format`.

    One self-contained file: the runner with `_common.py` inlined where the runner imports it.
    """
    template = _TEMPLATES.get(model_format)
    if template is None:
        raise ValueError(f"no runner for model format {model_format!r}")
    runner = _read(template)
    if runner.count(COMMON_IMPORT) != 1:
        raise RuntimeError(f"{template} must import _common exactly once as {COMMON_IMPORT.strip()!r}")
    return runner.replace(COMMON_IMPORT, _read("_common.py"))


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
