"""Reading ONNX signatures and reconciling them with declared ones."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from control_plane.modelconfig.exceptions import InvalidArtifact, InvalidModelSpec
from control_plane.modelconfig.signature import check_declared, read_onnx_signature
from control_plane.modelconfig.specs import Signature, TensorSpec
from tests.support import model_files, zoo_sklearn


def _sig(inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]) -> Signature:
    return Signature.model_validate(
        {
            "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs],
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in outputs],
        }
    )


def test_exported_mlp_signature(tmp_path: Path) -> None:
    path = model_files.onnx_mlp(tmp_path / "m.onnx", in_features=5, out_features=2)
    assert read_onnx_signature(path) == _sig([("x", "FP32", [-1, 5])], [("y", "FP32", [-1, 2])])


def test_fixed_batch_signature(tmp_path: Path) -> None:
    path = model_files.onnx_mlp(tmp_path / "m.onnx", dynamic_batch=False, batch=3)
    assert read_onnx_signature(path) == _sig([("x", "FP32", [3, 4])], [("y", "FP32", [3, 3])])


def test_initializers_listed_as_inputs_are_excluded(tmp_path: Path) -> None:
    path = model_files.onnx_initializer_inputs(tmp_path / "m.onnx")
    signature = read_onnx_signature(path)
    assert [t.name for t in signature.inputs] == ["x"]
    assert signature.inputs[0].shape == [-1, 4]
    assert signature.outputs == [TensorSpec(name="y", datatype="FP32", shape=[-1, 3])]


def test_string_tensors_are_bytes(tmp_path: Path) -> None:
    path = model_files.onnx_identity(tmp_path / "m.onnx", elem_type=TensorProto.STRING, shape=["N", 2])
    assert read_onnx_signature(path) == _sig([("x", "BYTES", [-1, 2])], [("y", "BYTES", [-1, 2])])


def test_unsupported_dtype_is_named(tmp_path: Path) -> None:
    path = model_files.onnx_identity(tmp_path / "m.onnx", elem_type=TensorProto.COMPLEX64, shape=[2])
    with pytest.raises(InvalidArtifact, match=r"^input 'x': dtype COMPLEX64 is not supported$") as info:
        read_onnx_signature(path)
    assert info.value.status_code == 422
    assert info.value.kind == "InvalidArtifact"


def test_skl2onnx_default_zipmap_output_is_refused_with_the_option_that_fixes_it(tmp_path: Path) -> None:
    """skl2onnx converts a classifier with a ZipMap output by default (a sequence of maps), under its
    default name `output_probability`: what users bring most often, and Triton cannot serve it."""
    path = zoo_sklearn.logistic_classifier(tmp_path / "m.onnx")
    with pytest.raises(InvalidArtifact) as info:
        read_onnx_signature(path)
    assert str(info.value) == (
        "output 'output_probability' is a sequence, not a tensor; Triton serves tensors only: it comes from "
        "a ZipMap operator, which skl2onnx adds to classifiers by default; convert the model with "
        "options={'zipmap': False} (skl2onnx.to_onnx or convert_sklearn) to get the probabilities as a tensor"
    )
    assert info.value.status_code == 422


def test_other_non_tensor_values_are_named_without_the_zipmap_hint(tmp_path: Path) -> None:
    """A sequence that no ZipMap made (SplitToSequence) and a map input, written with onnx.helper."""
    floats = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    pieces = helper.make_tensor_sequence_value_info("pieces", TensorProto.FLOAT, None)
    graph = helper.make_graph(
        [helper.make_node("SplitToSequence", ["x"], ["pieces"])], "g", [floats], [pieces]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "seq.onnx")
    with pytest.raises(
        InvalidArtifact, match=r"^output 'pieces' is a sequence, not a tensor; Triton serves tensors only$"
    ):
        read_onnx_signature(tmp_path / "seq.onnx")
    words = helper.make_value_info(
        "words",
        helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])),
    )
    ids = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    node = helper.make_node(
        "DictVectorizer", ["words"], ["y"], domain="ai.onnx.ml", string_vocabulary=["a", "b"]
    )
    graph = helper.make_graph([node], "g", [words], [ids])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    onnx.save(model, tmp_path / "map.onnx")
    with pytest.raises(
        InvalidArtifact, match=r"^input 'words' is a map, not a tensor; Triton serves tensors only$"
    ):
        read_onnx_signature(tmp_path / "map.onnx")


@pytest.mark.parametrize("name", ["0", "input.1", "onnx::Gemm_0", "x:0", "a/b/c", "in put", "n" * 300])
def test_exporter_tensor_names_are_read_verbatim(tmp_path: Path, name: str) -> None:
    path = model_files.onnx_identity(tmp_path / "m.onnx", input_name=name, output_name=f"{name}_out")
    signature = read_onnx_signature(path)
    assert [t.name for t in signature.inputs] == [name]
    assert [t.name for t in signature.outputs] == [f"{name}_out"]


def test_corrupt_file_gives_the_parser_reason(tmp_path: Path) -> None:
    path = model_files.corrupt_file(tmp_path / "upload-1234.onnx")
    with pytest.raises(InvalidArtifact) as info:
        read_onnx_signature(path)
    message = info.value.message
    assert message.startswith("onnx.checker: ")
    assert "parse" in message or "ir_version" in message
    assert str(tmp_path) not in message  # no server paths in client-facing errors


def test_text_file_is_not_onnx(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_text("definitely not a model")
    with pytest.raises(InvalidArtifact, match=r"^onnx\.checker: "):
        read_onnx_signature(path)


def test_checker_rejects_invalid_graph(tmp_path: Path) -> None:
    path = model_files.onnx_identity(tmp_path / "m.onnx")
    import onnx

    model = onnx.load(str(path))
    model.graph.node[0].op_type = "NoSuchOp"
    onnx.save(model, str(path))
    with pytest.raises(InvalidArtifact, match=r"onnx\.checker: .*NoSuchOp"):
        read_onnx_signature(path)


ACTUAL = _sig([("x", "FP32", [-1, 4]), ("mask", "BOOL", [-1, -1])], [("y", "FP32", [-1, -1])])


def test_no_declaration_keeps_the_artifact_signature() -> None:
    assert check_declared(declared=None, actual=ACTUAL) == ACTUAL


def test_declared_fixed_dims_refine_dynamic_ones() -> None:
    declared = _sig([("mask", "BOOL", [-1, 7]), ("x", "FP32", [-1, -1])], [("y", "FP32", [-1, 3])])
    effective = check_declared(declared=declared, actual=ACTUAL)
    # the model's order, the model's fixed dims, the declaration's refinements
    assert effective == _sig([("x", "FP32", [-1, 4]), ("mask", "BOOL", [-1, 7])], [("y", "FP32", [-1, 3])])


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (
            _sig([("x", "FP32", [-1, 5]), ("mask", "BOOL", [-1, -1])], [("y", "FP32", [-1, -1])]),
            "input 'x': dimension 1 is declared 5, the model has 4",
        ),
        (
            _sig([("x", "FP16", [-1, 4]), ("mask", "BOOL", [-1, -1])], [("y", "FP32", [-1, -1])]),
            "input 'x': declared FP16, the model has FP32",
        ),
        (
            _sig([("x", "FP32", [-1, 4]), ("mask", "BOOL", [-1, -1])], [("y", "FP32", [-1, -1, 2])]),
            r"output 'y': declared shape \[-1, -1, 2\] has rank 3, the model has rank 2",
        ),
        (
            _sig([("x", "FP32", [-1, 4]), ("z", "BOOL", [-1, -1])], [("y", "FP32", [-1, -1])]),
            "input 'z' is declared but the model has no such input",
        ),
        (
            _sig([("x", "FP32", [-1, 4])], [("y", "FP32", [-1, -1])]),
            "input 'mask' of the model is not declared",
        ),
    ],
)
def test_declaration_conflicts(declared: Signature, message: str) -> None:
    with pytest.raises(InvalidModelSpec, match=message) as info:
        check_declared(declared=declared, actual=ACTUAL)
    assert info.value.status_code == 422
