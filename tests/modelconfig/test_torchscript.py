"""TorchScript artifacts: loaded, run on dummy inputs and checked against the declared signature."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from control_plane.modelconfig.exceptions import InvalidArtifact, InvalidModelSpec
from control_plane.modelconfig.specs import Signature
from control_plane.modelconfig.torchscript import validate_torchscript
from tests.support import model_files


def _sig(inputs: list[tuple[str, str, list[int]]], outputs: list[tuple[str, str, list[int]]]) -> Signature:
    return Signature.model_validate(
        {
            "inputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in inputs],
            "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in outputs],
        }
    )


MLP = _sig([("x", "FP32", [-1, 4])], [("y", "FP32", [-1, 3])])
CLASSIFIER = _sig([("x", "FP32", [-1, 4])], [("scores", "FP32", [-1, 3]), ("label", "INT64", [-1])])


@pytest.mark.parametrize("trace", [False, True])
def test_matching_mlp_passes(tmp_path: Path, trace: bool) -> None:
    path = model_files.torchscript_mlp(tmp_path / "m.pt", trace=trace)
    validate_torchscript(path, signature=MLP)
    validate_torchscript(path, signature=_sig([("x", "FP32", [2, 4])], [("y", "FP32", [2, -1])]))


def test_tuple_outputs_pass(tmp_path: Path) -> None:
    validate_torchscript(model_files.torchscript_classifier(tmp_path / "m.pt"), signature=CLASSIFIER)


@pytest.mark.parametrize(
    ("signature", "message"),
    [
        (
            _sig([("x", "FP32", [-1, 4])], [("y", "FP64", [-1, 3])]),
            "^output 'y': the model returns FP32, declared FP64$",
        ),
        (
            _sig([("x", "FP32", [-1, 4])], [("y", "FP32", [-1, 3, 1])]),
            r"^output 'y': the model returns rank 2 \(\[1, 3\]\), declared rank 3 \(\[-1, 3, 1\]\)$",
        ),
        (
            _sig([("x", "FP32", [-1, 4])], [("y", "FP32", [-1, 5])]),
            "^output 'y': dimension 1 is declared 5, the model returns 3",
        ),
        (
            _sig([("x", "FP32", [-1, 4])], [("y", "FP32", [-1, 3]), ("z", "FP32", [-1, 3])]),
            r"^the model returns 1 output\(s\), 2 declared \(y, z\)$",
        ),
        (
            _sig([("x", "FP32", [-1, 4]), ("x2", "FP32", [-1, 4])], [("y", "FP32", [-1, 3])]),
            r"^the model's forward takes 1 input\(s\) \(input\), 2 declared \(x, x2\)$",
        ),
        (
            _sig([("x", "FP32", [-1, 5])], [("y", "FP32", [-1, 3])]),
            "^running the model on dummy inputs of the declared shapes failed: "
            r"RuntimeError: mat1 and mat2 shapes cannot be multiplied \(1x5 and 4x8\)$",
        ),
    ],
)
def test_mismatches_are_named(tmp_path: Path, signature: Signature, message: str) -> None:
    path = model_files.torchscript_mlp(tmp_path / "m.pt")
    with pytest.raises(InvalidArtifact, match=message) as info:
        validate_torchscript(path, signature=signature)
    assert info.value.status_code == 422


def test_wrong_output_dtype_of_second_output(tmp_path: Path) -> None:
    path = model_files.torchscript_classifier(tmp_path / "m.pt")
    signature = _sig([("x", "FP32", [-1, 4])], [("scores", "FP32", [-1, 3]), ("label", "INT32", [-1])])
    with pytest.raises(InvalidArtifact, match=r"^output 'label': the model returns INT64, declared INT32$"):
        validate_torchscript(path, signature=signature)


def test_non_tensor_result_is_rejected(tmp_path: Path) -> None:
    class ReturnsDict(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"y": x}

    path = tmp_path / "m.pt"
    torch.jit.script(ReturnsDict()).save(str(path))
    with pytest.raises(InvalidArtifact, match="returns dict; expected a tensor or a tuple/list of tensors"):
        validate_torchscript(path, signature=_sig([("x", "FP32", [2])], [("y", "FP32", [2])]))


def test_bytes_inputs_cannot_be_fed(tmp_path: Path) -> None:
    path = model_files.torchscript_mlp(tmp_path / "m.pt")
    with pytest.raises(InvalidModelSpec, match="input 'x': dtype BYTES cannot be fed to a TorchScript model"):
        validate_torchscript(path, signature=_sig([("x", "BYTES", [-1])], [("y", "FP32", [-1, 3])]))


def test_corrupt_file_gives_the_loader_reason(tmp_path: Path) -> None:
    path = model_files.corrupt_file(tmp_path / "upload.pt")
    with pytest.raises(InvalidArtifact, match=r"^torch\.jit\.load: PytorchStreamReader failed") as info:
        validate_torchscript(path, signature=MLP)
    assert str(tmp_path) not in info.value.message


def test_onnx_file_is_not_torchscript(tmp_path: Path) -> None:
    path = model_files.onnx_mlp(tmp_path / "m.onnx")
    with pytest.raises(InvalidArtifact, match=r"^torch\.jit\.load: "):
        validate_torchscript(path, signature=MLP)
