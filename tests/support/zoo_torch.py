"""Zoo models from torch.onnx.export with its defaults: the TorchScript-based and the dynamo exporter."""

from __future__ import annotations

import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tests.support.model_files import ONNX_OPSET
from tests.support.zoo import Zoo
from tests.support.zoo_modules import (
    Attention,
    Classifier,
    Compare,
    Conv,
    Double,
    Embed,
    Image,
    IntOps,
    Mlp,
    Norm,
    Recurrent,
    TwoInputs,
)

RNG = np.random.default_rng(11)
_MISSING = object()
DYNAMO = "torch.onnx.export (dynamo, the default)"
DYNAMO_ZIPPED = "torch.onnx.export (dynamo, the default; weights in .onnx.data, zipped)"
DYNAMO_OPSET = 18  # the dynamo exporter's lowest; asking for less runs a (slow, fallible) version converter


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def build_module(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return factory().eval()


# name -> (module factory, example inputs); what both exporters and TorchScript get.
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], dict[str, np.ndarray]]]] = {
    "mlp": (Mlp, lambda: {"x": f32(2, 4)}),
    "conv": (Conv, lambda: {"image": f32(2, 1, 4, 4)}),
    "classifier": (Classifier, lambda: {"x": f32(3, 4)}),
    "embedding": (Embed, lambda: {"ids": np.array([[1, 2, 3], [9, 0, 4]], np.int64)}),
    "two-inputs": (TwoInputs, lambda: {"a": f32(2, 3), "b": f32(2, 3)}),
    "compare": (Compare, lambda: {"x": f32(2, 5)}),
    "layernorm": (Norm, lambda: {"x": f32(2, 6)}),
    "gru": (lambda: Recurrent("gru"), lambda: {"seq": f32(2, 3, 4)}),
    "lstm": (lambda: Recurrent("lstm"), lambda: {"seq": f32(2, 3, 4)}),
    "transformer": (Attention, lambda: {"tokens": f32(2, 5, 8)}),
    "fp64": (Double, lambda: {"x": RNG.standard_normal((2, 3))}),
    "int32": (IntOps, lambda: {"counts": np.array([[1, 2, 3], [4, -5, 6]], np.int32)}),
    "uint8-image": (Image, lambda: {"pixels": RNG.integers(0, 256, (2, 3, 3), dtype=np.uint8)}),
}


def _export(module: nn.Module, inputs: dict[str, np.ndarray], path: Path, **options: object) -> Path:
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    opset = ONNX_OPSET if options.get("dynamo") is False else DYNAMO_OPSET
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), opset_version=opset, **options)  # type: ignore[arg-type]
    return path


def add_legacy_exports(zoo: Zoo) -> None:
    """torch.onnx.export(dynamo=False) with its defaults: tensor names like onnx::Gemm_0, input.1, 7."""
    for case, (factory, make_inputs) in CASES.items():
        name = f"legacy-{case}"

        def build(name: str = name, factory=factory, make_inputs=make_inputs) -> None:
            inputs = make_inputs()
            path = _export(build_module(factory), inputs, zoo.path(name, ".onnx"), dynamo=False)
            zoo.onnx(
                name, "torch.onnx.export (TorchScript-based, default names)", path, _onnx_names(path, inputs)
            )

        zoo.attempt(name, build)
    for case in ("mlp", "conv", "classifier"):  # the common "batch" dynamic axis, with chosen names
        factory, make_inputs = CASES[case]
        inputs = make_inputs()
        outputs = ["scores", "label"] if case == "classifier" else ["output"]
        axes = {name: {0: "batch"} for name in [*inputs, *outputs]}
        path = _export(
            build_module(factory),
            inputs,
            zoo.path(f"legacy-batch-{case}", ".onnx"),
            dynamo=False,
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=axes,
        )
        zoo.onnx(f"legacy-batch-{case}", "torch.onnx.export (dynamic batch axis)", path, inputs)


@contextmanager
def without_repo_triton() -> Iterator[None]:
    """Hide the repository's `triton/` folder (deployment files) from torch.export, which would take it,
    as a namespace package on sys.path, for OpenAI Triton and fail on `triton.language`."""
    saved = sys.modules.get("triton", _MISSING)
    sys.modules["triton"] = None  # type: ignore[assignment]  # find_spec("triton") is then None
    try:
        yield
    finally:
        if saved is _MISSING:
            del sys.modules["triton"]
        else:
            sys.modules["triton"] = saved  # type: ignore[assignment]


def add_dynamo_exports(zoo: Zoo) -> None:
    """torch.onnx.export's default in torch 2.13: the dynamo exporter (needs onnxscript)."""
    with without_repo_triton():
        _dynamo_exports(zoo)


DYNAMO_CASES = (
    "mlp",
    "conv",
    "classifier",
    "embedding",
    "two-inputs",
    "compare",
    "layernorm",
    "int32",
    "fp64",
)


def _dynamo_exports(zoo: Zoo) -> None:
    for case, one_file in (*((case, False) for case in DYNAMO_CASES), ("mlp", True)):
        name = f"dynamo-{case}" + ("-one-file" if one_file else "")
        factory, make_inputs = CASES[case]

        def build(name: str = name, factory=factory, make_inputs=make_inputs, one_file=one_file) -> None:
            inputs = make_inputs()
            batch = torch.export.Dim("batch", min=1, max=64)
            shapes = tuple({0: batch} for _ in inputs)
            options: dict[str, object] = {"external_data": False} if one_file else {}
            path = _export(
                build_module(factory),
                inputs,
                zoo.path(name, ".onnx"),
                dynamic_shapes=shapes,
                verbose=False,
                **options,
            )
            add_dynamo_export(zoo, name, path, _onnx_names(path, inputs))

        zoo.attempt(name, build)


def add_dynamo_export(
    zoo: Zoo,
    name: str,
    path: Path,
    inputs: dict[str, np.ndarray],
    *,
    families: tuple[str, str] = (DYNAMO, DYNAMO_ZIPPED),
) -> None:
    """Add what the dynamo exporter wrote at `path`: the .onnx file, or, where it put the weights in
    `<file>.data` beside it, both in a zip (what a user uploads then); `families` names each case."""
    data = path.with_name(path.name + ".data")
    if not data.exists():
        zoo.onnx(name, families[0], path, inputs)
        return
    archive = zoo.path(name, ".zip")
    with zipfile.ZipFile(archive, "w") as out:
        out.write(path, path.name)
        out.write(data, data.name)
    zoo.onnx(name, families[1], archive, inputs, reference=path)


def _onnx_names(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The request keyed by the exported graph's own input names (whatever the exporter chose)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    return dict(zip(names, inputs.values(), strict=True))
