"""Builders of small, deterministic model files (ONNX, TorchScript) and of corrupt artifacts."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

# onnxruntime 1.31 reads IR <= 13, while onnx 1.23's make_model writes IR 14 by default.
ONNX_IR_VERSION = 8
ONNX_OPSET = 17


def mlp_module(
    *, in_features: int = 4, out_features: int = 3, hidden: int = 8, seed: int = 0
) -> torch.nn.Module:
    """A small Linear-ReLU-Linear network with weights fixed by `seed`, in eval mode."""
    torch.manual_seed(seed)
    module = torch.nn.Sequential(
        torch.nn.Linear(in_features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_features)
    )
    return module.eval()


def onnx_mlp(
    path: Path,
    *,
    in_features: int = 4,
    out_features: int = 3,
    hidden: int = 8,
    dynamic_batch: bool = True,
    batch: int = 2,
    seed: int = 0,
    input_name: str = "x",
    output_name: str = "y",
) -> Path:
    """Export `mlp_module` to ONNX (inputs [N, in], outputs [N, out]; N fixed to `batch` if not dynamic)."""
    module = mlp_module(in_features=in_features, out_features=out_features, hidden=hidden, seed=seed)
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # torch 2.13's default (dynamo) exporter needs onnxscript; the TorchScript-based one is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            (torch.zeros(batch, in_features),),
            str(path),
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    return path


def torchscript_mlp(
    path: Path,
    *,
    in_features: int = 4,
    out_features: int = 3,
    hidden: int = 8,
    seed: int = 0,
    trace: bool = False,
) -> Path:
    """Save `mlp_module` as TorchScript (scripted, or traced on a [2, in] input)."""
    module = mlp_module(in_features=in_features, out_features=out_features, hidden=hidden, seed=seed)
    scripted = torch.jit.trace(module, torch.zeros(2, in_features)) if trace else torch.jit.script(module)
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


class Classifier(torch.nn.Module):
    """Scores (FP32 [N, classes]) and the winning class (INT64 [N]) of an MLP."""

    def __init__(self, *, in_features: int, classes: int, seed: int) -> None:
        super().__init__()
        self.mlp = mlp_module(in_features=in_features, out_features=classes, seed=seed)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.mlp(x)
        return scores, scores.argmax(dim=1)


def torchscript_classifier(path: Path, *, in_features: int = 4, classes: int = 3, seed: int = 0) -> Path:
    """A scripted model with two outputs of different dtypes: scores FP32 [N, classes], label INT64 [N]."""
    scripted = torch.jit.script(Classifier(in_features=in_features, classes=classes, seed=seed).eval())
    path.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(path))
    return path


def onnx_identity(
    path: Path,
    *,
    elem_type: int = TensorProto.FLOAT,
    shape: Sequence[int | str] = ("N", 2),
    input_name: str = "x",
    output_name: str = "y",
) -> Path:
    """An ONNX Identity model of any element type and shape (strings in `shape` are symbolic dims)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", [input_name], [output_name])],
        "identity",
        [helper.make_tensor_value_info(input_name, elem_type, list(shape))],
        [helper.make_tensor_value_info(output_name, elem_type, list(shape))],
    )
    return _save(path, graph, opset=ONNX_OPSET, ir_version=ONNX_IR_VERSION)


def onnx_initializer_inputs(path: Path, *, in_features: int = 4, out_features: int = 3) -> Path:
    """An IR 3 model (y = x @ W) that also lists its initializer W among the graph inputs."""
    weight = np.arange(in_features * out_features, dtype=np.float32).reshape(in_features, out_features)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "matmul",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_features]),
            helper.make_tensor_value_info("W", TensorProto.FLOAT, [in_features, out_features]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_features])],
        initializer=[numpy_helper.from_array(weight, name="W")],
    )
    return _save(path, graph, opset=7, ir_version=3)


def _save(path: Path, graph: onnx.GraphProto, *, opset: int, ir_version: int) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def corrupt_file(path: Path, *, size: int = 512) -> Path:
    """A file of deterministic garbage bytes, no valid ONNX or TorchScript."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(1234).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path
