"""Zoo models from torch: torch.onnx.export with its defaults (TorchScript-based and dynamo exporters), and
TorchScript traced and scripted, registered with example inputs or a declared signature."""

from __future__ import annotations

import functools
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ml_dtypes
import numpy as np
import torch
from torch import nn

from tests.support.model_files import ONNX_OPSET
from tests.support.zoo import Zoo, ZooModel, save_example

RNG = np.random.default_rng(11)
_MISSING = object()
DYNAMO_OPSET = 18  # the dynamo exporter's lowest; asking for less runs a (slow, fallible) version converter


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Conv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2 * 4 * 4, 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(image)).flatten(1))


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = Mlp()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = torch.softmax(self.mlp(x), dim=1)
        return scores, scores.argmax(dim=1)


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(10, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids).mean(dim=1)


class TwoInputs(nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a * b + a


class Compare(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x > 0, torch.where(x > 0, x, torch.zeros_like(x))


class Norm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.norm(x), dim=-1)


class Recurrent(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.rnn = nn.GRU(4, 5, batch_first=True) if kind == "gru" else nn.LSTM(4, 5, batch_first=True)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(seq)
        return output


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.layer(tokens)


class Double(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class IntOps(nn.Module):
    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        return counts * 3 - counts.sum(dim=1, keepdim=True)


class Half(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 + 1


class Image(nn.Module):
    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return pixels.float().mean(dim=(1, 2)) / 255.0


class Total(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()


class FixedView(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(2, 6).t()


def _module(factory: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return factory().eval()


# name -> (module factory, example inputs); what both exporters and TorchScript get.
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], dict[str, np.ndarray]]]] = {
    "mlp": (Mlp, lambda: {"x": _f32(2, 4)}),
    "conv": (Conv, lambda: {"image": _f32(2, 1, 4, 4)}),
    "classifier": (Classifier, lambda: {"x": _f32(3, 4)}),
    "embedding": (Embed, lambda: {"ids": np.array([[1, 2, 3], [9, 0, 4]], np.int64)}),
    "two-inputs": (TwoInputs, lambda: {"a": _f32(2, 3), "b": _f32(2, 3)}),
    "compare": (Compare, lambda: {"x": _f32(2, 5)}),
    "layernorm": (Norm, lambda: {"x": _f32(2, 6)}),
    "gru": (lambda: Recurrent("gru"), lambda: {"seq": _f32(2, 3, 4)}),
    "lstm": (lambda: Recurrent("lstm"), lambda: {"seq": _f32(2, 3, 4)}),
    "transformer": (Attention, lambda: {"tokens": _f32(2, 5, 8)}),
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
            path = _export(_module(factory), inputs, zoo.path(name, ".onnx"), dynamo=False)
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
            _module(factory),
            inputs,
            zoo.path(f"legacy-batch-{case}", ".onnx"),
            dynamo=False,
            input_names=list(inputs),
            output_names=outputs,
            dynamic_axes=axes,
        )
        zoo.onnx(f"legacy-batch-{case}", "torch.onnx.export (dynamic batch axis)", path, inputs)


@contextmanager
def _without_repo_triton() -> Iterator[None]:
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
    with _without_repo_triton():
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
                _module(factory),
                inputs,
                zoo.path(name, ".onnx"),
                dynamic_shapes=shapes,
                verbose=False,
                **options,
            )
            data = path.with_name(path.name + ".data")
            if data.exists():  # the dynamo exporter writes weights beside the model: upload both, zipped
                archive = zoo.path(name, ".zip")
                with zipfile.ZipFile(archive, "w") as out:
                    out.write(path, path.name)
                    out.write(data, data.name)
                zoo.onnx(
                    name,
                    "torch.onnx.export (dynamo, the default; weights in .onnx.data, zipped)",
                    archive,
                    _onnx_names(path, inputs),
                    reference=path,
                )
                return
            zoo.onnx(name, "torch.onnx.export (dynamo, the default)", path, _onnx_names(path, inputs))

        zoo.attempt(name, build)


def _onnx_names(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The request keyed by the exported graph's own input names (whatever the exporter chose)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    return dict(zip(names, inputs.values(), strict=True))


def add_torchscript(zoo: Zoo) -> None:
    """Traced and scripted modules, signatures derived from .npz / JSON examples, and one declared."""
    traced = ("mlp", "conv", "embedding", "two-inputs", "gru", "uint8-image")
    scripted = ("classifier", "compare", "layernorm", "fp64", "int32", "lstm", "transformer")
    for index, case in enumerate((*traced, *scripted)):
        kind = "traced" if case in traced else "scripted"
        name = f"ts-{kind}-{case}"
        zoo.attempt(name, functools.partial(_ts, zoo, case, kind, name, index))
    _torchscript_special(zoo)


def _ts(zoo: Zoo, case: str, kind: str, name: str, index: int) -> None:
    factory, make_inputs = CASES[case]
    inputs = make_inputs()
    module = _module(factory)
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved = torch.jit.trace(module, args) if kind == "traced" else torch.jit.script(module)
    path = zoo.path(name, ".pt")
    saved.save(str(path))
    as_json = index % 2 == 0  # half the examples as JSON, half as .npz
    example = save_example(
        zoo.path(f"{name}-example", ".json" if as_json else ".npz"), inputs, as_json=as_json
    )
    zoo.torchscript(
        name,
        f"TorchScript {kind} (signature from a {'JSON' if as_json else '.npz'} example)",
        path,
        inputs,
        example=example,
    )


def _torchscript_special(zoo: Zoo) -> None:
    half = torch.jit.script(Half().eval())
    path = zoo.path("ts-scripted-fp16", ".pt")
    half.save(str(path))
    inputs = {"x": RNG.standard_normal((2, 3)).astype(np.float16)}
    zoo.torchscript(
        "ts-scripted-fp16",
        "TorchScript scripted (FP16)",
        path,
        inputs,
        example=save_example(zoo.path("ts-fp16-example", ".npz"), inputs),
        rtol=1e-3,
        atol=1e-3,
    )
    total = torch.jit.script(Total().eval())
    path = zoo.path("ts-scripted-scalar-out", ".pt")
    total.save(str(path))
    inputs = {"x": _f32(2, 3)}
    zoo.torchscript(
        "ts-scripted-scalar-out",
        "TorchScript scripted (0-d output)",
        path,
        inputs,
        example=save_example(zoo.path("ts-total-example", ".npz"), inputs),
        scalar_outputs=True,
        rtol=1e-5,
        atol=1e-5,
    )
    fixed = torch.jit.trace(FixedView().eval(), torch.zeros(3, 4))
    path = zoo.path("ts-traced-fixed", ".pt")
    fixed.save(str(path))
    inputs = {"x": _f32(3, 4)}
    zoo.torchscript(
        "ts-traced-fixed",
        "TorchScript traced (fixed shapes, no batch)",
        path,
        inputs,
        example=save_example(zoo.path("ts-fixed-example", ".npz"), inputs),
    )
    _bf16(zoo)
    mlp = torch.jit.script(_module(Mlp))
    path = zoo.path("ts-declared-mlp", ".pt")
    mlp.save(str(path))
    spec = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 3]}],
    }
    model = zoo.torchscript(
        "ts-declared-mlp",
        "TorchScript scripted (declared signature)",
        path,
        {"features": _f32(2, 4)},
        spec=spec,
    )
    model.expected = {"logits": model.expected["output__0"]}


class Bf16(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 - 1


def _bf16(zoo: Zoo) -> None:
    """BF16 in and out (no numpy type: tritonclient uses ml_dtypes, the runner DLPack); declared signature."""
    path = zoo.path("ts-scripted-bf16", ".pt")
    torch.jit.script(Bf16().eval()).save(str(path))
    values = np.array([[1.5, -2.0, 0.25], [3.0, 0.0, -0.5]], dtype=np.float32)
    spec = {
        "inputs": [{"name": "x", "datatype": "BF16", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "BF16", "shape": [-1, 3]}],
    }
    expected = Bf16()(torch.from_numpy(values).to(torch.bfloat16)).float().numpy()
    model = ZooModel(
        name="ts-scripted-bf16",
        family="TorchScript scripted (BF16, declared signature)",
        format="torchscript",
        artifact=path,
        inputs={"x": values.astype(ml_dtypes.bfloat16)},
        expected={"y": expected.astype(ml_dtypes.bfloat16)},
        spec=spec,
    )
    zoo.models.append(model)
