"""Zoo models written with onnx.helper: every datatype, scalars, symbolic and fully dynamic dims, strings,
optional inputs, exporter-style tensor names, several inputs/outputs, and external data archives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.support.model_files import ONNX_IR_VERSION, ONNX_OPSET
from tests.support.zoo import Zoo

RNG = np.random.default_rng(7)
# KServe datatype -> (ONNX element type, numpy dtype, sample values)
DTYPES: dict[str, tuple[int, object]] = {
    "BOOL": (TensorProto.BOOL, np.bool_),
    "INT8": (TensorProto.INT8, np.int8),
    "INT16": (TensorProto.INT16, np.int16),
    "INT32": (TensorProto.INT32, np.int32),
    "INT64": (TensorProto.INT64, np.int64),
    "UINT8": (TensorProto.UINT8, np.uint8),
    "UINT16": (TensorProto.UINT16, np.uint16),
    "UINT32": (TensorProto.UINT32, np.uint32),
    "UINT64": (TensorProto.UINT64, np.uint64),
    "FP16": (TensorProto.FLOAT16, np.float16),
    "FP32": (TensorProto.FLOAT, np.float32),
    "FP64": (TensorProto.DOUBLE, np.float64),
    "BYTES": (TensorProto.STRING, object),
}


FIXED_TOO = ("BOOL", "INT8", "UINT64", "FP16", "BYTES")  # also served without a batch dimension


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Deterministic values of a datatype, spanning its range (extremes included for integers)."""
    count = int(np.prod(shape))
    if datatype == "BOOL":
        return (np.arange(count) % 3 == 0).reshape(shape)
    if datatype == "BYTES":
        words = [b"alpha", b"Beta", "\u00fcml\u00e4ut".encode(), b"", b"x y z", b"0"]
        return np.array([words[i % len(words)] for i in range(count)], dtype=object).reshape(shape)
    dtype = np.dtype(DTYPES[datatype][1])  # type: ignore[call-overload]
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = [info.min, info.max, 0, 1, info.max // 3]
        return np.array([values[i % len(values)] for i in range(count)], dtype=dtype).reshape(shape)
    return (RNG.standard_normal(count) * 10).astype(dtype).reshape(shape)


def save(
    path: Path, nodes: list, inputs: list, outputs: list, *, initializers=(), ir=ONNX_IR_VERSION, opsets=None
) -> Path:
    """Write a checked model."""
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    imports = opsets or [helper.make_opsetid("", ONNX_OPSET)]
    model = helper.make_model(graph, opset_imports=imports, ir_version=ir)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def vi(name: str, elem: int, shape: list) -> onnx.ValueInfoProto:
    """A tensor value info."""
    return helper.make_tensor_value_info(name, elem, shape)


def add_helper_models(zoo: Zoo) -> None:
    """Every datatype with and without a batch dimension, then shapes, names, strings, optional inputs."""
    for datatype, (elem, _) in DTYPES.items():
        slug = datatype.lower()
        batched = save(
            zoo.path(f"id-{slug}", ".onnx"),
            [helper.make_node("Identity", ["x"], ["y"])],
            [vi("x", elem, ["N", 3])],
            [vi("y", elem, ["N", 3])],
        )
        zoo.onnx(f"id-{slug}", "onnx.helper", batched, {"x": sample(datatype, (2, 3))})
        if datatype not in FIXED_TOO:
            continue
        fixed = save(
            zoo.path(f"fixed-{slug}", ".onnx"),
            [helper.make_node("Identity", ["x"], ["y"])],
            [vi("x", elem, [2, 3])],
            [vi("y", elem, [2, 3])],
        )
        zoo.onnx(f"fixed-{slug}", "onnx.helper (no batch dimension)", fixed, {"x": sample(datatype, (2, 3))})
    zoo.attempt("id-bf16", lambda: _bf16(zoo))
    _shapes(zoo)
    _names(zoo)
    _strings(zoo)
    _optional(zoo)
    _multi(zoo)


def _bf16(zoo: Zoo) -> None:
    path = save(
        zoo.path("id-bf16", ".onnx"),
        [helper.make_node("Identity", ["x"], ["y"])],
        [vi("x", TensorProto.BFLOAT16, ["N", 3])],
        [vi("y", TensorProto.BFLOAT16, ["N", 3])],
    )
    raise RuntimeError(
        f"BF16 ({path.name}): onnxruntime's Python API has no bfloat16 (numpy lacks it), so neither the "
        "Python-backend runner nor a local reference run can run it; the native backend (NGC image) can"
    )


def _shapes(zoo: Zoo) -> None:
    f32 = TensorProto.FLOAT
    scale = numpy_helper.from_array(np.array(2.5, dtype=np.float32), "scale")
    path = save(
        zoo.path("scalar-fp32", ".onnx"),
        [helper.make_node("Mul", ["s", "scale"], ["t"])],
        [vi("s", f32, [])],
        [vi("t", f32, [])],
        initializers=[scale],
    )
    _scalar(zoo, path)
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "one")
    path = save(
        zoo.path("scalar-int64", ".onnx"),
        [helper.make_node("Add", ["n", "one"], ["m"])],
        [vi("n", TensorProto.INT64, [])],
        [vi("m", TensorProto.INT64, [])],
        initializers=[one],
    )
    _scalar(zoo, path)
    path = save(
        zoo.path("tensor-times-scalar", ".onnx"),
        [helper.make_node("Mul", ["x", "k"], ["y"])],
        [vi("x", f32, ["N", 3]), vi("k", f32, [])],
        [vi("y", f32, ["N", 3])],
    )
    model = zoo.onnx(
        "tensor-times-scalar",
        "onnx.helper (tensor and 0-d input)",
        path,
        {"x": sample("FP32", (2, 3)), "k": np.array(3.0, np.float32)},
    )
    model.inputs["k"] = model.inputs["k"].reshape(1)  # sent as [1]: Triton's dims cannot be empty
    path = save(
        zoo.path("symbolic-reduce", ".onnx"),
        [helper.make_node("ReduceSum", ["tokens"], ["total"], keepdims=0)],
        [vi("tokens", f32, ["batch", "seq"])],
        [vi("total", f32, [])],
    )
    zoo.onnx(
        "symbolic-reduce",
        "onnx.helper (named symbolic dims)",
        path,
        {"tokens": sample("FP32", (2, 5))},
        scalar_outputs=True,
    )
    path = save(
        zoo.path("fully-dynamic", ".onnx"),
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", f32, [None, None, None])],
        [vi("y", f32, [None, None, None])],
    )
    zoo.onnx(
        "fully-dynamic", "onnx.helper (fully dynamic, unnamed dims)", path, {"x": sample("FP32", (2, 3, 4))}
    )
    path = save(
        zoo.path("symbolic-3d", ".onnx"),
        [helper.make_node("Softmax", ["x"], ["y"], axis=-1)],
        [vi("x", f32, ["batch", "seq", 4])],
        [vi("y", f32, ["batch", "seq", 4])],
    )
    zoo.onnx("symbolic-3d", "onnx.helper (named symbolic dims)", path, {"x": sample("FP32", (3, 5, 4))})
    path = save(
        zoo.path("rank1-batch", ".onnx"),
        [helper.make_node("Neg", ["v"], ["w"])],
        [vi("v", TensorProto.INT32, ["N"])],
        [vi("w", TensorProto.INT32, ["N"])],
    )
    zoo.onnx("rank1-batch", "onnx.helper (rank-1 [N])", path, {"v": np.arange(-3, 4, dtype=np.int32)})


def _scalar(zoo: Zoo, path: Path) -> None:
    """A 0-d input is sent as [1] (Triton's dims cannot be empty); the model itself sees a 0-d tensor."""
    name = path.stem
    session_input = onnx.load(str(path)).graph.input[0]
    dtype = np.float32 if session_input.type.tensor_type.elem_type == TensorProto.FLOAT else np.int64
    value = np.array(4, dtype=dtype)
    model = zoo.onnx(name, "onnx.helper (0-d scalar)", path, {session_input.name: value}, scalar_outputs=True)
    model.inputs = {session_input.name: value.reshape(1)}


def _names(zoo: Zoo) -> None:
    names = {
        "name-numeric": ("0", "123"),
        "name-tf-style": ("x:0", "Identity:0"),
        "name-path": ("/model/input/x", "/model/Relu_output_0"),
        "name-torch-default": ("onnx::Gemm_0", "input.1"),
        "name-long": ("t" * 300, "u" * 300),
        "name-space-unicode": ("in put", "\u00e4us gang"),
    }
    for model, (x, y) in names.items():
        path = save(
            zoo.path(model, ".onnx"),
            [helper.make_node("Relu", [x], [y])],
            [vi(x, TensorProto.FLOAT, ["N", 4])],
            [vi(y, TensorProto.FLOAT, ["N", 4])],
        )
        zoo.onnx(model, "onnx.helper (exporter-style names)", path, {x: sample("FP32", (2, 4))})


def string_lower(path: Path) -> Path:
    """text BYTES [1, -1] -> lower BYTES [1, -1] (ONNX StringNormalizer takes [C] or [1, C])."""
    return save(
        path,
        [helper.make_node("StringNormalizer", ["text"], ["lower"], case_change_action="LOWER", locale="C")],
        [vi("text", TensorProto.STRING, [1, "C"])],
        [vi("lower", TensorProto.STRING, [1, "C"])],
    )


def _strings(zoo: Zoo) -> None:
    path = string_lower(zoo.path("string-lower", ".onnx"))
    words = np.array([[b"Hello", b"WORLD", b"MiXeD"]], dtype=object)
    zoo.onnx("string-lower", "onnx.helper (strings)", path, {"text": words})
    ml = helper.make_opsetid("ai.onnx.ml", 3)
    node = helper.make_node(
        "LabelEncoder",
        ["label"],
        ["word"],
        domain="ai.onnx.ml",
        keys_int64s=[0, 1, 2],
        values_strings=["cat", "dog", "bird"],
        default_string="?",
    )
    path = save(
        zoo.path("int-to-string", ".onnx"),
        [node],
        [vi("label", TensorProto.INT64, ["N"])],
        [vi("word", TensorProto.STRING, ["N"])],
        opsets=[helper.make_opsetid("", ONNX_OPSET), ml],
    )
    zoo.onnx(
        "int-to-string", "onnx.helper (int64 to strings)", path, {"label": np.array([2, 0, 5, 1], np.int64)}
    )


def _optional(zoo: Zoo) -> None:
    bias = numpy_helper.from_array(np.array([0.5, -1.0, 2.0], dtype=np.float32), "bias")
    path = save(
        zoo.path("optional-input", ".onnx"),
        [helper.make_node("Add", ["x", "bias"], ["y"])],
        [vi("x", TensorProto.FLOAT, ["N", 3]), vi("bias", TensorProto.FLOAT, [3])],
        [vi("y", TensorProto.FLOAT, ["N", 3])],
        initializers=[bias],
    )
    zoo.onnx(
        "optional-input", "onnx.helper (optional input with a default)", path, {"x": sample("FP32", (2, 3))}
    )
    zoo.onnx(
        "optional-input-given",
        "onnx.helper (optional input given)",
        path,
        {"x": sample("FP32", (2, 3)), "bias": np.array([1.0, 2.0, 3.0], np.float32)},
    )


def _multi(zoo: Zoo) -> None:
    nodes = [
        helper.make_node("TopK", ["scores", "k"], ["values", "indices"], axis=-1),
        helper.make_node("Cast", ["ids"], ["ids_f64"], to=TensorProto.DOUBLE),
        helper.make_node("Not", ["mask"], ["inverted"]),
    ]
    k = numpy_helper.from_array(np.array([2], dtype=np.int64), "k")
    path = save(
        zoo.path("multi-io", ".onnx"),
        nodes,
        [
            vi("scores", TensorProto.FLOAT, ["N", 5]),
            vi("ids", TensorProto.INT32, ["N", 2]),
            vi("mask", TensorProto.BOOL, ["N", 3]),
        ],
        [
            vi("values", TensorProto.FLOAT, ["N", 2]),
            vi("indices", TensorProto.INT64, ["N", 2]),
            vi("ids_f64", TensorProto.DOUBLE, ["N", 2]),
            vi("inverted", TensorProto.BOOL, ["N", 3]),
        ],
        initializers=[k],
    )
    inputs = {
        "scores": sample("FP32", (2, 5)),
        "ids": np.array([[1, -2], [3, 4]], np.int32),
        "mask": sample("BOOL", (2, 3)),
    }
    zoo.onnx("multi-io", "onnx.helper (3 inputs, 4 outputs, mixed dtypes)", path, inputs)
