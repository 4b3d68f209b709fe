"""From upload to a version Triton serves: ONNX, TorchScript, Python backend, batching; two versions."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from control_plane.modelconfig.config import parse_config
from tests.support import model_files
from tests.support.api import Api, infer_direct
from tests.support.builders import unique_name
from tests.support.triton_models import MODEL

ROWS = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 2.0, 3.0, 4.0], [-3.0, 0.0, 0.5, 1.5]], dtype=np.float32)


def _onnxruntime(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def _ready_version(api: Api, tenant: str, model: str, path: Path, *, key: str | None = None) -> dict:
    response = api.upload(tenant, model, path, key=key)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["state"] in ("registered", "loading", "ready")
    detail = api.wait_settled(tenant, model, created["version"])
    assert detail["state"] == "ready", detail
    return detail


def test_onnx_upload_serves_like_onnxruntime(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    publisher = api.key(tenant, "publisher")
    name = unique_name("mlp")
    assert api.create_model(tenant, key=publisher, name=name, format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(tmp_path / "mlp.onnx")

    detail = _ready_version(api, tenant, name, artifact, key=publisher)

    assert detail["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert detail["size_bytes"] == artifact.stat().st_size
    assert detail["signature"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    config = parse_config(detail["config"])
    assert config.name == detail["triton_name"]
    assert config.max_batch_size == 8
    assert config.HasField("dynamic_batching")
    outputs = infer_direct(api.settings.triton_urls[0], detail["triton_name"], {"x": ROWS})
    np.testing.assert_allclose(outputs["y"], _onnxruntime(artifact, ROWS), rtol=1e-5, atol=1e-6)


def test_torchscript_upload_serves_like_torch(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    name = unique_name("ts")
    spec: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert api.create_model(tenant, name=name, format="torchscript", **spec).status_code == 201
    artifact = model_files.torchscript_mlp(tmp_path / "mlp.pt")

    detail = _ready_version(api, tenant, name, artifact)

    expected = torch.jit.load(str(artifact)).eval()(torch.from_numpy(ROWS)).detach().numpy()
    outputs = infer_direct(api.settings.triton_urls[0], detail["triton_name"], {"x": ROWS})
    np.testing.assert_allclose(outputs["y"], expected, rtol=1e-5, atol=1e-6)


def test_python_backend_model_is_admin_only_and_serves(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    publisher = api.key(tenant, "publisher")
    spec: dict[str, Any] = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
        "max_batch_size": 0,
    }
    denied = api.create_model(tenant, key=publisher, name="py", format="python", **spec)
    assert denied.status_code == 403
    assert denied.json()["error"] == "Forbidden"
    assert api.create_model(tenant, name="py", format="python", **spec).status_code == 201
    source = tmp_path / "model.py"
    source.write_text(MODEL.format(init="pass", scale=3.0, offset=1.0))

    detail = _ready_version(api, tenant, "py", source)

    x = np.array([1.0, 2.0, -1.0], dtype=np.float32)
    outputs = infer_direct(api.settings.triton_urls[0], detail["triton_name"], {"INPUT0": x})
    np.testing.assert_allclose(outputs["OUTPUT0"], x * 3.0 + 1.0)


def test_fixed_first_dimension_gets_no_batching_and_serves(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="fixed", format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(tmp_path / "fixed.onnx", dynamic_batch=False, batch=3)

    detail = _ready_version(api, tenant, "fixed", artifact)

    config = parse_config(detail["config"])
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [3, 4]
    outputs = infer_direct(api.settings.triton_urls[0], detail["triton_name"], {"x": ROWS})
    np.testing.assert_allclose(outputs["y"], _onnxruntime(artifact, ROWS), rtol=1e-5, atol=1e-6)


def test_second_version_with_other_output_shape_coexists(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    v1 = _ready_version(api, tenant, "m", model_files.onnx_mlp(tmp_path / "v1.onnx", out_features=3))
    v2 = _ready_version(api, tenant, "m", model_files.onnx_mlp(tmp_path / "v2.onnx", out_features=5, seed=1))

    assert (v1["version"], v2["version"]) == (1, 2)
    assert v1["triton_name"] != v2["triton_name"]
    url = api.settings.triton_urls[0]
    assert infer_direct(url, v1["triton_name"], {"x": ROWS})["y"].shape == (3, 3)
    assert infer_direct(url, v2["triton_name"], {"x": ROWS})["y"].shape == (3, 5)
    listing = api.client.get(f"/v1/tenants/{tenant}/models/m", headers=api.headers()).json()
    assert [(v["version"], v["state"]) for v in listing["versions"]] == [(1, "ready"), (2, "ready")]


def test_alias_points_at_a_ready_version(api: Api, tmp_path: Path) -> None:
    tenant = api.tenant()
    publisher = api.key(tenant, "publisher")
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    _ready_version(api, tenant, "m", model_files.onnx_mlp(tmp_path / "v1.onnx"))

    staged = api.client.put(
        f"/v1/tenants/{tenant}/models/m/aliases/staging", json={"version": 1}, headers=api.headers(publisher)
    )
    assert staged.status_code == 200, staged.text
    assert staged.json() == {"alias": "staging", "version": 1, "previous_version": None, "action": "promote"}
    protected = api.client.put(
        f"/v1/tenants/{tenant}/models/m/aliases/production",
        json={"version": 1},
        headers=api.headers(publisher),
    )
    assert protected.status_code == 403
    promoted = api.client.put(
        f"/v1/tenants/{tenant}/models/m/aliases/production", json={"version": 1}, headers=api.headers()
    )
    assert promoted.status_code == 200
    model = api.client.get(f"/v1/tenants/{tenant}/models/m", headers=api.headers()).json()
    assert model["aliases"] == {"production": 1, "staging": 1}
    missing = api.client.put(
        f"/v1/tenants/{tenant}/models/m/aliases/production", json={"version": 9}, headers=api.headers()
    )
    assert missing.status_code == 404
