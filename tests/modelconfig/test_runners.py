"""Our Python-backend runners, driven outside Triton through a fake `triton_python_backend_utils`."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from google.protobuf import json_format
from numpy.typing import NDArray
from onnx import TensorProto
from tritonclient.grpc import model_config_pb2 as mc

from control_plane.modelconfig.config import ModelFormat, batching_plan, build_config
from control_plane.modelconfig.specs import InstanceGroupSpec, Signature
from control_plane.runners import RUNNER_FILENAME, runner_source
from control_plane.settings import Device, Runtime
from tests.modelconfig import fake_pb_utils
from tests.support import model_files

MLP = Signature.model_validate(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
)
CLASSIFIER = Signature.model_validate(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "scores", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ],
    }
)
Loader = Callable[..., Any]


def _python_config(
    model_format: ModelFormat, signature: Signature, *, max_batch_size: int | None
) -> mc.ModelConfig:
    size, dims = batching_plan(signature, requested_max_batch_size=max_batch_size)
    return build_config(
        name="t--m--v1",
        model_format=model_format,
        signature=dims,
        max_batch_size=size,
        dynamic_batching=None,
        instance_group=InstanceGroupSpec(),
        runtime=Runtime.PYTHON,
        device=Device.CPU,
        gpus=[],
        warmup=False,
    )


@pytest.fixture
def load_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    """Lay out `<model>/1/{model.py, artifact}` as Triton would, import the runner and initialize it."""
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils)
    threads = torch.get_num_threads()

    def load(model_format: ModelFormat, *, artifact: Path, config: mc.ModelConfig) -> Any:
        model_dir = tmp_path / f"model-{uuid.uuid4().hex[:8]}"
        version_dir = model_dir / "1"
        version_dir.mkdir(parents=True)
        shutil.copy(artifact, version_dir / config.parameters["artifact_filename"].string_value)
        (version_dir / RUNNER_FILENAME).write_text(runner_source(model_format))  # type: ignore[arg-type]
        spec = importlib.util.spec_from_file_location(
            f"runner_{model_dir.name}", version_dir / RUNNER_FILENAME
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.TritonPythonModel()
        model.initialize(
            {
                # Triton hands the config over as JSON with proto field names and enum names.
                "model_config": json_format.MessageToJson(config, preserving_proto_field_name=True),
                "model_repository": str(model_dir),
                "model_version": "1",
                "model_instance_kind": "CPU",
                "model_instance_device_id": "0",
            }
        )
        return model

    yield load
    torch.set_num_threads(threads)  # the torch runner sets 1 thread, process-wide


class CountingCalls:
    """Wraps a session (`run`) or a module (`__call__`) and records the batch shapes it was fed."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def run(self, names: list[str], feed: dict[str, NDArray[Any]]) -> Any:
        self.shapes.append(next(iter(feed.values())).shape)
        return self.inner.run(names, feed)

    def __call__(self, *tensors: torch.Tensor) -> Any:
        self.shapes.append(tuple(tensors[0].shape))
        return self.inner(*tensors)


def _requests(*arrays: NDArray[Any], name: str = "x") -> list[fake_pb_utils.InferenceRequest]:
    return [fake_pb_utils.InferenceRequest({name: array}) for array in arrays]


def _output(response: fake_pb_utils.InferenceResponse, name: str) -> NDArray[Any]:
    assert not response.has_error(), response.error().message()  # type: ignore[union-attr]
    tensor = fake_pb_utils.get_output_tensor_by_name(response, name)
    assert tensor is not None
    return tensor.as_numpy()


def _inputs(*batch_sizes: int, features: int = 4) -> list[NDArray[Any]]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal((size, features)).astype(np.float32) for size in batch_sizes]


def test_onnx_batches_a_call_into_one_run(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.onnx_mlp(tmp_path / "mlp.onnx")
    model = load_runner("onnx", artifact=artifact, config=_python_config("onnx", MLP, max_batch_size=8))
    model.session = CountingCalls(model.session)
    arrays = _inputs(1, 2, 3)
    responses = model.execute(_requests(*arrays))
    assert model.session.shapes == [(6, 4)]
    reference = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    assert len(responses) == 3
    for array, response in zip(arrays, responses, strict=True):
        got = _output(response, "y")
        assert got.shape == (array.shape[0], 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, reference.run(["y"], {"x": array})[0], rtol=1e-5, atol=1e-6)


def test_onnx_without_batching_runs_each_request(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.onnx_mlp(tmp_path / "mlp.onnx")
    model = load_runner("onnx", artifact=artifact, config=_python_config("onnx", MLP, max_batch_size=0))
    model.session = CountingCalls(model.session)
    responses = model.execute(_requests(*_inputs(2, 3)))
    assert model.session.shapes == [(2, 4), (3, 4)]
    assert [_output(response, "y").shape for response in responses] == [(2, 3), (3, 3)]


def test_a_bad_request_fails_alone(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.onnx_mlp(tmp_path / "mlp.onnx")
    model = load_runner("onnx", artifact=artifact, config=_python_config("onnx", MLP, max_batch_size=8))
    good_a, good_b = _inputs(2, 1)
    bad = np.ones((1, 5), dtype=np.float32)
    responses = model.execute(_requests(good_a, bad, good_b))
    assert _output(responses[0], "y").shape == (2, 3)
    assert _output(responses[2], "y").shape == (1, 3)
    assert responses[1].has_error()
    message = responses[1].error().message()
    assert message == (
        "the model cannot run on the inputs sent ('x' FP32 [1, 5]): Got invalid dimensions for input: x "
        "for the following indices index: 1 Got: 5 Expected: 4"
    )
    assert responses[1].output_tensors() == []


def test_outputs_are_cast_to_the_config_dtype(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.onnx_mlp(tmp_path / "mlp.onnx")
    as_fp64 = MLP.model_copy(update={"outputs": [MLP.outputs[0].model_copy(update={"datatype": "FP64"})]})
    model = load_runner("onnx", artifact=artifact, config=_python_config("onnx", as_fp64, max_batch_size=8))
    (array,) = _inputs(2)
    got = _output(model.execute(_requests(array))[0], "y")
    assert got.dtype == np.float64
    reference = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, reference.run(["y"], {"x": array})[0], rtol=1e-6)


def test_bytes_tensors_round_trip(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.onnx_identity(tmp_path / "id.onnx", elem_type=TensorProto.STRING, shape=["N", 2])
    signature = Signature.model_validate(
        {
            "inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1, 2]}],
            "outputs": [{"name": "y", "datatype": "BYTES", "shape": [-1, 2]}],
        }
    )
    model = load_runner("onnx", artifact=artifact, config=_python_config("onnx", signature, max_batch_size=4))
    first = np.array([[b"a", "é".encode()]], dtype=object)
    second = np.array([[b"", b"xyz"], [b"1", b"2"]], dtype=object)
    responses = model.execute(_requests(first, second))
    assert _output(responses[0], "y").tolist() == [[b"a", "é".encode()]]
    assert _output(responses[1], "y").tolist() == [[b"", b"xyz"], [b"1", b"2"]]


def test_artifact_filename_comes_from_the_config(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.onnx_mlp(tmp_path / "mlp.onnx")
    config = _python_config("onnx", MLP, max_batch_size=8)
    config.parameters["artifact_filename"].string_value = "weights-v2.onnx"
    model = load_runner("onnx", artifact=artifact, config=config)
    assert model.session._model_path.endswith("/1/weights-v2.onnx")


def test_torchscript_batches_and_keeps_output_dtypes(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.torchscript_classifier(tmp_path / "clf.pt")
    config = _python_config("torchscript", CLASSIFIER, max_batch_size=8)
    model = load_runner("torchscript", artifact=artifact, config=config)
    assert torch.get_num_threads() == 1
    model.module = CountingCalls(model.module)
    arrays = _inputs(2, 1, 4)
    responses = model.execute(_requests(*arrays))
    assert model.module.shapes == [(7, 4)]
    reference = torch.jit.load(str(artifact))
    for array, response in zip(arrays, responses, strict=True):
        with torch.inference_mode():
            scores, label = reference(torch.from_numpy(array))
        got_scores, got_label = _output(response, "scores"), _output(response, "label")
        assert got_scores.dtype == np.float32 and got_label.dtype == np.int64
        np.testing.assert_allclose(got_scores, scores.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got_label, label.numpy())


def test_torchscript_error_names_the_cause(tmp_path: Path, load_runner: Loader) -> None:
    artifact = model_files.torchscript_mlp(tmp_path / "mlp.pt")
    model = load_runner(
        "torchscript", artifact=artifact, config=_python_config("torchscript", MLP, max_batch_size=8)
    )
    (good,) = _inputs(3)
    responses = model.execute(_requests(np.ones((2, 5), dtype=np.float32), good))
    error = responses[0].error()
    assert error.message() == (
        "the model cannot run on the inputs sent ('x' FP32 [2, 5]): "
        "RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x5 and 4x8)"
    )
    assert error.code() == fake_pb_utils.TritonError.INVALID_ARG  # Triton answers 400
    expected = model_files.mlp_module()(torch.from_numpy(good)).detach().numpy()
    np.testing.assert_allclose(_output(responses[1], "y"), expected, rtol=1e-5, atol=1e-6)


def test_runner_sources_are_package_data() -> None:
    assert RUNNER_FILENAME == "model.py"
    onnx_source, torch_source = runner_source("onnx"), runner_source("torchscript")
    assert "class TritonPythonModel" in onnx_source and "import onnxruntime" in onnx_source
    assert "class TritonPythonModel" in torch_source and "import torch" in torch_source
    compile(onnx_source, "model.py", "exec")
    compile(torch_source, "model.py", "exec")
    for source in (onnx_source, torch_source):  # one file for Triton: the shared part is inlined
        assert "class BatchingRunner" in source
        assert "from control_plane" not in source and "import control_plane" not in source
    with pytest.raises(ValueError, match="no runner for model format 'python'"):
        runner_source("python")  # type: ignore[arg-type]
