"""Zoo models from torch.jit: traced and scripted modules, signatures derived from .npz / JSON examples
or declared, FP16, BF16, 0-d outputs and fixed shapes."""

from __future__ import annotations

import functools
import warnings

import ml_dtypes
import numpy as np
import torch

from tests.support.zoo import Zoo, ZooModel, save_example
from tests.support.zoo_modules import Bf16, FixedView, Half, Mlp, Total
from tests.support.zoo_torch import CASES, RNG, build_module, f32


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
    module = build_module(factory)
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
    inputs = {"x": f32(2, 3)}
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
    inputs = {"x": f32(3, 4)}
    zoo.torchscript(
        "ts-traced-fixed",
        "TorchScript traced (fixed shapes, no batch)",
        path,
        inputs,
        example=save_example(zoo.path("ts-fixed-example", ".npz"), inputs),
    )
    _bf16(zoo)
    mlp = torch.jit.script(build_module(Mlp))
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
        {"features": f32(2, 4)},
        spec=spec,
    )
    model.expected = {"logits": model.expected["output__0"]}


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
