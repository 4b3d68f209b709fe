"""Bad input gets a clear error, and leaves nothing behind in the registry or the bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from tests.appfixtures import bucket_objects
from tests.support import model_files
from tests.support.api import Api


def test_corrupt_onnx_is_422_with_the_reason(api: Api, tmp_path: Path, nothing_new) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    with nothing_new():
        response = api.upload(tenant, "m", model_files.corrupt_file(tmp_path / "bad.onnx"))
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "InvalidArtifact"
    assert body["detail"].startswith("onnx.checker: ")
    assert "Traceback" not in response.text


def test_declared_spec_conflicting_with_the_artifact_is_422(api: Api, tmp_path: Path, nothing_new) -> None:
    tenant = api.tenant()
    spec: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 7]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert api.create_model(tenant, name="m", format="onnx", **spec).status_code == 201
    with nothing_new():
        response = api.upload(tenant, "m", model_files.onnx_mlp(tmp_path / "m.onnx", in_features=4))
    assert response.status_code == 422
    assert "'x'" in response.json()["detail"]


def test_torchscript_failing_its_dummy_run_is_422(api: Api, tmp_path: Path, nothing_new) -> None:
    tenant = api.tenant()
    spec: dict[str, Any] = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 9]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
    assert api.create_model(tenant, name="ts", format="torchscript", **spec).status_code == 201
    with nothing_new():
        response = api.upload(tenant, "ts", model_files.torchscript_mlp(tmp_path / "m.pt", in_features=4))
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidArtifact"


def test_unknown_model_and_tenant_are_404(api: Api, tmp_path: Path, nothing_new) -> None:
    tenant = api.tenant()
    artifact = model_files.onnx_mlp(tmp_path / "m.onnx")
    with nothing_new():
        assert api.upload(tenant, "nope", artifact).status_code == 404
        assert api.upload("no-such-tenant", "nope", artifact).status_code == 404
        response = api.client.get(f"/v1/tenants/{tenant}/models/nope", headers=api.headers())
    assert response.status_code == 404
    assert response.json() == {"error": "NotFound", "detail": f"model 'nope' not found in tenant '{tenant}'"}


def test_duplicate_model_name_is_409(api: Api, nothing_new) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    with nothing_new():
        response = api.create_model(tenant, name="m", format="torchscript")
    assert response.status_code == 409
    assert response.json()["error"] == "Conflict"


def test_upload_over_the_size_limit_is_413(make_api, minio_client: Minio, tmp_path: Path) -> None:
    api = make_api(max_upload_bytes=2048)
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * 10_000)
    response = api.upload(tenant, "m", big)
    assert response.status_code == 413
    assert response.json()["error"] == "PayloadTooLarge"
    assert api.client.get(f"/v1/tenants/{tenant}/models/m/versions", headers=api.headers()).json() == []
    assert bucket_objects(minio_client, api.settings.s3_bucket) == []


@pytest.mark.parametrize("name", ["../x", "a/b", "", "x" * 300, "UPPER", "a--b", "a b"])
def test_unsafe_model_names_are_422(api: Api, name: str, nothing_new) -> None:
    tenant = api.tenant()
    with nothing_new():
        response = api.create_model(tenant, name=name, format="onnx")
    assert response.status_code == 422
    assert response.json()["error"] == "InvalidRequest"
    assert "name" in response.json()["detail"]


def test_consumer_key_cannot_create_models(api: Api, nothing_new) -> None:
    tenant = api.tenant()
    consumer = api.key(tenant, "consumer")
    with nothing_new():
        response = api.create_model(tenant, key=consumer, name="m", format="onnx")
    assert response.status_code == 403
    assert response.json()["error"] == "Forbidden"


def test_other_tenants_models_are_invisible(api: Api, tmp_path: Path, nothing_new) -> None:
    a, b = api.tenant(), api.tenant()
    key_a = api.key(a, "publisher")
    assert api.create_model(b, name="secret", format="onnx").status_code == 201
    with nothing_new():
        assert api.client.get(f"/v1/tenants/{b}/models/secret", headers=api.headers(key_a)).status_code == 404
        assert api.create_model(b, key=key_a, name="x", format="onnx").status_code == 404
        assert (
            api.upload(b, "secret", model_files.onnx_mlp(tmp_path / "m.onnx"), key=key_a).status_code == 404
        )


def test_missing_file_field_is_422(api: Api, nothing_new) -> None:
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    with nothing_new():
        response = api.client.post(
            f"/v1/tenants/{tenant}/models/m/versions", data={"other": "x"}, headers=api.headers()
        )
    assert response.status_code == 422
    assert "file" in response.json()["detail"]
