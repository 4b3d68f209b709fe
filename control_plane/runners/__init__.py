"""Python-backend runners (model.py templates) for ONNX and TorchScript artifacts, shipped as package data."""

from __future__ import annotations

from importlib import resources
from typing import Literal

RUNNER_FILENAME = "model.py"
_TEMPLATES = {"onnx": "onnx_runner.py", "torchscript": "torchscript_runner.py"}


def runner_source(model_format: Literal["onnx", "torchscript"]) -> str:
    """Source of the Triton Python-backend model.py that serves artifacts of `model_format`."""
    template = _TEMPLATES.get(model_format)
    if template is None:
        raise ValueError(f"no runner for model format {model_format!r}")
    return resources.files(__package__).joinpath(template).read_text(encoding="utf-8")
