"""The conformance zoo: real models from real exporters, each with request inputs and the outputs its own
framework (onnxruntime, torch) gives for them, computed here on the same inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

Arrays = dict[str, np.ndarray]


@dataclass
class ZooModel:
    """One model to register and serve, its request and the framework's answer to it."""

    name: str  # registry model name
    family: str  # which exporter made it
    format: str  # onnx | torchscript
    artifact: Path
    inputs: Arrays
    expected: Arrays = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)  # extra fields of the model's registration
    example: Path | None = None  # TorchScript: example inputs the signature is derived from
    scalar_outputs: bool = False  # 0-d outputs: Triton reports them as [1] (its dims cannot be empty)
    rtol: float = 1e-5
    atol: float = 1e-6


@dataclass
class Exclusion:
    """A model the suite does not serve, and why."""

    name: str
    reason: str


@dataclass
class Zoo:
    """What the builders produced: models to serve and named exclusions."""

    root: Path
    models: list[ZooModel] = field(default_factory=list)
    excluded: list[Exclusion] = field(default_factory=list)

    def path(self, name: str, suffix: str) -> Path:
        """A fresh file path for a model's artifact."""
        return self.root / f"{name}{suffix}"

    def onnx(self, name: str, family: str, artifact: Path, inputs: Arrays, **extra: Any) -> ZooModel:
        """Add an ONNX model; its expected outputs come from onnxruntime on `inputs`."""
        reference = extra.pop("reference", None) or artifact  # archives: the unpacked .onnx
        model = ZooModel(name=name, family=family, format="onnx", artifact=artifact, inputs=inputs, **extra)
        model.expected = run_onnxruntime(reference, inputs)
        self.models.append(model)
        return model

    def torchscript(self, name: str, family: str, artifact: Path, inputs: Arrays, **extra: Any) -> ZooModel:
        """Add a TorchScript model; its expected outputs come from torch.jit.load on `inputs`."""
        model = ZooModel(
            name=name, family=family, format="torchscript", artifact=artifact, inputs=inputs, **extra
        )
        model.expected = run_torchscript(artifact, inputs)
        self.models.append(model)
        return model

    def attempt(self, name: str, build: Callable[[], object]) -> None:
        """Run a builder; an exporter that fails is an exclusion naming its error, not a crash."""
        try:
            build()
        except Exception as exc:  # an exporter's limit, reported with the reason
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.excluded.append(Exclusion(name, f"{type(exc).__name__}: {first[:200]}"))


def run_onnxruntime(path: Path, inputs: Arrays) -> Arrays:
    """Outputs by name of the model at `path` in onnxruntime on CPU (BYTES as bytes objects)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {name: _for_ort(value) for name, value in inputs.items()}
    names = [output.name for output in session.get_outputs()]
    return {
        name: _bytes(np.asarray(value)) for name, value in zip(names, session.run(names, feed), strict=True)
    }


def run_torchscript(path: Path, inputs: Arrays) -> Arrays:
    """Outputs (`output__<i>` or as the model declares them) of a TorchScript file run by torch."""
    module = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.inference_mode():
        result = module(*[torch.from_numpy(np.ascontiguousarray(v)) for v in inputs.values()])
    tensors = list(result) if isinstance(result, tuple | list) else [result]
    return {f"output__{i}": t.detach().numpy() for i, t in enumerate(tensors)}


def _for_ort(value: np.ndarray) -> np.ndarray:
    if value.dtype == object:
        flat = [item.decode() if isinstance(item, bytes) else item for item in value.reshape(-1)]
        return np.array(flat, dtype=object).reshape(value.shape)
    return value


def _bytes(value: np.ndarray) -> np.ndarray:
    if value.dtype.kind in "OU":
        flat = [item.encode() if isinstance(item, str) else item for item in value.reshape(-1)]
        return np.array(flat, dtype=object).reshape(value.shape)
    return value


def save_example(path: Path, inputs: Arrays, *, as_json: bool = False) -> Path:
    """Example inputs for a TorchScript upload: an .npz (numpy.savez) or JSON with explicit datatypes."""
    if not as_json:
        with path.open("wb") as f:
            np.savez(f, **inputs)
        return path
    from control_plane.modelconfig.specs import datatype_from_numpy

    document = {
        name: {
            "datatype": datatype_from_numpy(v.dtype),
            "shape": list(v.shape),
            "data": v.reshape(-1).tolist(),
        }
        for name, v in inputs.items()
    }
    path.write_text(json.dumps(document))
    return path
