"""Issue 10, acceptance 2: each mistake made bringing a model gets a 4xx naming the problem and the fix
(and leaves nothing behind); what exporters make is accepted."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from tests.support import model_files, zoo_sklearn
from tests.support.api import Api
from tests.support.deploy import upload_and_alias
from tests.support.zoo_modules import Classifier

MLP_SIGNATURE: dict[str, Any] = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


def _upload(api: Api, tenant: str, model: str, files: dict[str, tuple[str, bytes]]) -> Any:
    return api.client.post(
        f"/v1/tenants/{tenant}/models/{model}/versions", files=files, headers=api.headers()
    )


def _refused(response: Any, *fragments: str, kind: str = "InvalidArtifact") -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == kind, body
    for fragment in fragments:
        assert fragment in body["detail"], (fragment, body["detail"])


@pytest.fixture
def tenant(api: Api) -> str:
    """A tenant with models `ts` (TorchScript, no signature), `onnx` and `py` (python)."""
    name = api.tenant()
    assert api.create_model(name, name="ts", format="torchscript").status_code == 201
    assert api.create_model(name, name="onnx", format="onnx").status_code == 201
    py = api.create_model(name, name="py", format="python", **MLP_SIGNATURE, max_batch_size=0)
    assert py.status_code == 201, py.text
    return name


def _state_dict(*, zip_format: bool) -> bytes:
    buffer = io.BytesIO()
    torch.save(model_files.mlp_module().state_dict(), buffer, _use_new_zipfile_serialization=zip_format)
    return buffer.getvalue()


@pytest.mark.parametrize("zip_format", [True, False])
def test_a_state_dict_is_told_to_export_with_trace_or_script(
    api: Api, tenant: str, zip_format: bool, nothing_new
) -> None:
    with nothing_new():
        response = _upload(api, tenant, "ts", {"file": ("weights.pt", _state_dict(zip_format=zip_format))})
    _refused(
        response,
        "this file is a state_dict (or a pickled module) saved with torch.save, not TorchScript",
        "export with torch.jit.trace(model, example_inputs) or torch.jit.script(model)",
    )


def test_format_mismatches_are_named_from_the_content(
    api: Api, tenant: str, tmp_path: Path, nothing_new
) -> None:
    onnx_bytes = model_files.onnx_mlp(tmp_path / "m.onnx").read_bytes()
    ts_bytes = model_files.torchscript_mlp(tmp_path / "m.pt").read_bytes()
    with nothing_new():
        as_ts = _upload(api, tenant, "ts", {"file": ("m.onnx", onnx_bytes)})
        as_onnx = _upload(api, tenant, "onnx", {"file": ("m.pt", ts_bytes)})
        as_python = _upload(api, tenant, "py", {"file": ("m.pt", ts_bytes)})
        source = _upload(api, tenant, "onnx", {"file": ("model.py", b"class TritonPythonModel:\n    pass\n")})
        state = _upload(api, tenant, "onnx", {"file": ("w.pt", _state_dict(zip_format=True))})
    _refused(
        as_ts,
        "this is an ONNX model, the model was created with format torchscript",
        "register a model with format onnx",
    )
    _refused(
        as_onnx,
        "this is a TorchScript archive, the model was created with format onnx",
        "register a model with format torchscript",
    )
    _refused(as_python, "this is a TorchScript archive, the model was created with format python")
    _refused(
        source,
        "this is Python source, the model was created with format onnx",
        "register a model with format python (admins only)",
    )
    _refused(state, "saved with torch.save", "torch.jit.trace", "torch.onnx.export")


def test_torchscript_without_a_signature_is_told_how_to_give_one(
    api: Api, tenant: str, tmp_path: Path, nothing_new
) -> None:
    ts_bytes = model_files.torchscript_mlp(tmp_path / "m.pt").read_bytes()
    with nothing_new():
        response = _upload(api, tenant, "ts", {"file": ("m.pt", ts_bytes)})
    _refused(
        response,
        "a TorchScript file does not state its inputs and outputs",
        "upload an `example` file with the version",
        "or declare 'inputs' and 'outputs'",
        kind="InvalidModelSpec",
    )


@pytest.mark.parametrize(
    ("example", "fragments"),
    [
        (b"not json", ["the example is neither an .npz file nor JSON", "numpy.savez"]),
        (
            json.dumps({"a": [[1.0] * 4], "b": [[1.0] * 4]}).encode(),
            ["the example has 2 tensor(s) (a, b) but forward takes (input)"],
        ),
        (json.dumps({"x": [[1.0, 2.0]]}).encode(), ["running the model on the example failed"]),
        (json.dumps({"x": ["a", "b"]}).encode(), ["example input 'x' must hold numbers or true/false"]),
    ],
)
def test_bad_examples_say_what_is_wrong(
    api: Api, tenant: str, tmp_path: Path, example: bytes, fragments: list[str], nothing_new
) -> None:
    ts_bytes = model_files.torchscript_mlp(tmp_path / "m.pt").read_bytes()
    with nothing_new():
        response = _upload(api, tenant, "ts", {"file": ("m.pt", ts_bytes), "example": ("example", example)})
    _refused(response, *fragments)


def test_signature_from_an_npz_example_names_inputs_after_forward(
    api: Api, tenant: str, tmp_path: Path
) -> None:
    path = tmp_path / "classifier.pt"
    torch.jit.script(Classifier().eval()).save(str(path))
    example = io.BytesIO()
    np.savez(example, np.zeros((2, 4), np.float32))  # positional: arr_0
    response = _upload(
        api, tenant, "ts", {"file": ("c.pt", path.read_bytes()), "example": ("e.npz", example.getvalue())}
    )
    assert response.status_code == 201, response.text
    detail = api.wait_settled(tenant, "ts", response.json()["version"])
    assert detail["state"] == "ready", detail
    assert detail["signature"] == {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "output__0", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "output__1", "datatype": "INT64", "shape": [-1]},
        ],
    }


def test_an_example_for_onnx_is_refused(api: Api, tenant: str, tmp_path: Path, nothing_new) -> None:
    onnx_bytes = model_files.onnx_mlp(tmp_path / "m.onnx").read_bytes()
    with nothing_new():
        response = _upload(
            api, tenant, "onnx", {"file": ("m.onnx", onnx_bytes), "example": ("e.json", b"{}")}
        )
    _refused(
        response, "an example file is only used to derive TorchScript signatures", kind="InvalidModelSpec"
    )


def test_a_scikit_learn_classifier_with_zipmap_is_told_to_convert_without_it(
    api: Api, tenant: str, tmp_path: Path, nothing_new
) -> None:
    """skl2onnx's default for classifiers: probabilities as a ZipMap (a sequence of maps)."""
    artifact = zoo_sklearn.logistic_classifier(tmp_path / "classifier.onnx").read_bytes()
    with nothing_new():
        response = _upload(api, tenant, "onnx", {"file": ("classifier.onnx", artifact)})
    _refused(
        response,
        "output 'output_probability' is a sequence, not a tensor",
        "convert the model with options={'zipmap': False}",
    )


def test_a_scikit_learn_pickle_is_told_to_convert_with_skl2onnx_and_never_unpickled(
    api: Api, tenant: str, tmp_path: Path, nothing_new
) -> None:
    """What scikit-learn users save first (pickle.dump of the fitted estimator); unpickling would run it."""
    import pickle

    from sklearn.linear_model import LogisticRegression

    features, target = zoo_sklearn.iris()
    artifact = pickle.dumps(LogisticRegression(max_iter=300).fit(features, target))
    for model in ("onnx", "ts"):
        with nothing_new():
            response = _upload(api, tenant, model, {"file": ("model.pkl", artifact)})
        _refused(response, "a pickled scikit-learn", "skl2onnx.to_onnx", "never loaded here")


def _external(tmp_path: Path) -> Path:
    model = onnx.load(str(model_files.onnx_mlp(tmp_path / "plain.onnx")))
    folder = tmp_path / "external"
    folder.mkdir()
    onnx.save(
        model, str(folder / "mlp.onnx"), save_as_external_data=True, location="mlp.bin", size_threshold=0
    )
    return folder


def test_external_data_without_its_files_is_told_to_upload_an_archive(
    api: Api, tenant: str, tmp_path: Path, nothing_new
) -> None:
    folder = _external(tmp_path)
    with nothing_new():
        response = _upload(api, tenant, "onnx", {"file": ("mlp.onnx", (folder / "mlp.onnx").read_bytes())})
    _refused(
        response,
        "keeps its weights in external data files (mlp.bin) that were not uploaded",
        "upload a zip or tar archive holding the .onnx file and those files beside it",
    )


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_bad_archives_say_what_is_wrong(api: Api, tenant: str, tmp_path: Path, nothing_new) -> None:
    folder = _external(tmp_path)
    onnx_bytes, weights = (folder / "mlp.onnx").read_bytes(), (folder / "mlp.bin").read_bytes()
    cases = [
        (
            _zip({"a.onnx": onnx_bytes, "b.onnx": onnx_bytes, "mlp.bin": weights}),
            ["exactly one .onnx file (or one named model.onnx)", "found a.onnx, b.onnx"],
        ),
        (
            _zip({"readme.txt": b"hi"}),
            [
                "this is a zip archive, the model was created with format onnx",
                "a zip/tar archive with the .onnx file and its external data files",
            ],
        ),
        (_tar({"../mlp.onnx": onnx_bytes}), ["unsafe path in the archive: '../mlp.onnx'"]),
        (_zip({"mlp.onnx": onnx_bytes}), ["external data files (mlp.bin) that were not uploaded"]),
    ]
    for archive, fragments in cases:
        with nothing_new():
            response = _upload(api, tenant, "onnx", {"file": ("model.zip", archive)})
        _refused(response, *fragments)


def test_an_external_data_archive_is_stored_and_served(api: Api, tenant: str, tmp_path: Path) -> None:
    folder = _external(tmp_path)
    archive = _tar(
        {"net/mlp.onnx": (folder / "mlp.onnx").read_bytes(), "net/mlp.bin": (folder / "mlp.bin").read_bytes()}
    )
    response = _upload(api, tenant, "onnx", {"file": ("model.tar.gz", archive)})
    assert response.status_code == 201, response.text
    detail = api.wait_settled(tenant, "onnx", response.json()["version"])
    assert detail["state"] == "ready", detail
    entry = api.settings.model_repository
    files = sorted(p.name for p in (Path(entry) / detail["triton_name"] / "1").iterdir() if p.is_file())
    assert files == ["mlp.bin", "model.onnx", "model.py"]


@pytest.mark.parametrize(
    ("name", "reason"),
    [("", "a tensor name cannot be empty"), ("x\u0000y", "cannot contain NUL"), ("n" * 1025, "at most 1024")],
)
def test_only_names_triton_cannot_take_are_refused(api: Api, name: str, reason: str, nothing_new) -> None:
    tenant = api.tenant()
    spec = {**MLP_SIGNATURE, "inputs": [{"name": name, "datatype": "FP32", "shape": [-1, 4]}]}
    with nothing_new():
        response = api.create_model(tenant, name="m", format="torchscript", **spec)
    assert response.status_code == 422
    assert reason in response.json()["detail"]


def test_declared_torchscript_outputs_keep_working(api: Api, tenant: str, tmp_path: Path) -> None:
    tenant2 = api.tenant()
    assert api.create_model(tenant2, name="ts", format="torchscript", **MLP_SIGNATURE).status_code == 201
    response = api.upload(tenant2, "ts", model_files.torchscript_mlp(tmp_path / "m.pt"))
    assert response.status_code == 201, response.text
    assert api.version(tenant2, "ts", 1)["signature"] == MLP_SIGNATURE


def test_an_input_the_model_cannot_take_is_400_in_the_users_terms(api: Api, tmp_path: Path) -> None:
    # x is [N, K] in the graph, but the weights need K = 4: the contract cannot know, onnxruntime fails.
    weight = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "K"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[weight],
    )
    path = tmp_path / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    deployed = upload_and_alias(
        api, tenant=tenant, model="m", artifact=path, consumer=api.key(tenant, "consumer")
    )
    body = {"inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP32", "data": [1.0] * 5}]}

    response = api.client.post("/v2/models/m/infer", json=body, headers=api.headers(deployed.consumer_key))

    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert (
        "the model cannot run on the inputs sent ('x' FP32 [1, 5]): MatMul: MatMul dimension mismatch"
        in message
    )
    assert (
        deployed.triton_name not in response.text
        and "ONNXRuntimeError" not in message
        and ".h:" not in message
    )
