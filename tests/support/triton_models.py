"""Builders of tiny Triton Python-backend models for tests, as files or as a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.http as triton_http

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ -1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""

# The registry's spec of a model of MODEL's signature (a Python-backend model; admins register these).
PYTHON_SPEC: dict[str, Any] = {
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
    "max_batch_size": 0,
}

MODEL = """\
import numpy as np
import numpy.typing as npt
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        {init}

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            y = (x * {scale!r} + {offset!r}).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("OUTPUT0", y)]))
        return responses
"""


def python_model_files(
    name: str,
    *,
    scale: float = 2.0,
    offset: float = 0.0,
    fail_on_init: str | None = None,
    config: str | None = None,
) -> dict[str, bytes]:
    """Files of a model computing OUTPUT0 = INPUT0 * scale + offset (FP32, 1-D), by relative path.

    `fail_on_init` makes initialize() raise RuntimeError with that message;
    `config` replaces the generated config.pbtxt (e.g. with a broken one).
    """
    init = f"raise RuntimeError({fail_on_init!r})" if fail_on_init is not None else "pass"
    return {
        "config.pbtxt": (config if config is not None else CONFIG.format(name=name)).encode(),
        "1/model.py": MODEL.format(init=init, scale=scale, offset=offset).encode(),
    }


def write_python_model(
    repository: Path,
    name: str,
    *,
    scale: float = 2.0,
    offset: float = 0.0,
    fail_on_init: str | None = None,
    config: str | None = None,
) -> Path:
    """Write a model built by `python_model_files` under `repository/name`; returns its folder."""
    files = python_model_files(name, scale=scale, offset=offset, fail_on_init=fail_on_init, config=config)
    folder = repository / name
    for relative, content in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return folder


def infer(
    http_url: str, name: str, values: list[float], *, headers: dict[str, str] | None = None
) -> npt.NDArray[np.float32]:
    """Call a model built here with stock `tritonclient.http`; returns OUTPUT0."""
    with triton_http.InferenceServerClient(http_url.split("://", 1)[-1], network_timeout=30) as client:
        x = np.asarray(values, dtype=np.float32)
        tensor = triton_http.InferInput("INPUT0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        result = client.infer(name, [tensor], headers=headers)
        output: npt.NDArray[np.float32] = result.as_numpy("OUTPUT0")
        return output
