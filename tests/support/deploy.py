"""Deploy a model through the API (tenant, keys, ONNX version, alias), for data-plane tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import model_files
from tests.support.api import Api
from tests.support.builders import unique_name


@dataclass(frozen=True)
class Deployed:
    """A ready version behind the `production` alias, and the keys to call it."""

    tenant: str
    model: str
    version: int
    triton_name: str
    consumer_key: str
    publisher_key: str
    artifact: Path


def deploy_onnx(
    api: Api,
    tmp_path: Path,
    *,
    tenant: str | None = None,
    model: str = "mlp",
    out_features: int = 3,
    seed: int = 0,
    alias: str = "production",
) -> Deployed:
    """Upload an ONNX MLP (x: FP32 [-1, 4] -> y: FP32 [-1, out_features]) and point `alias` at it."""
    tenant = tenant or api.tenant()
    publisher = api.key(tenant, "publisher")
    consumer = api.key(tenant, "consumer")
    existing = api.client.get(f"/v1/tenants/{tenant}/models/{model}", headers=api.headers())
    if existing.status_code == 404:
        assert api.create_model(tenant, key=publisher, name=model, format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(
        tmp_path / f"{unique_name(model)}.onnx", out_features=out_features, seed=seed
    )
    return upload_and_alias(
        api,
        tenant=tenant,
        model=model,
        artifact=artifact,
        consumer=consumer,
        publisher=publisher,
        alias=alias,
    )


def upload_and_alias(
    api: Api,
    *,
    tenant: str,
    model: str,
    artifact: Path,
    consumer: str,
    publisher: str | None = None,
    alias: str = "production",
) -> Deployed:
    """Upload `artifact` as a new version of a registered model, wait until ready, point `alias` at it."""
    uploaded = api.upload(tenant, model, artifact, key=publisher)
    assert uploaded.status_code == 201, uploaded.text
    detail = api.wait_settled(tenant, model, uploaded.json()["version"])
    assert detail["state"] == "ready", detail
    moved = api.client.put(
        f"/v1/tenants/{tenant}/models/{model}/aliases/{alias}",
        json={"version": detail["version"]},
        headers=api.headers(),
    )
    assert moved.status_code == 200, moved.text
    return Deployed(
        tenant=tenant,
        model=model,
        version=detail["version"],
        triton_name=detail["triton_name"],
        consumer_key=consumer,
        publisher_key=publisher or api.key(tenant, "publisher"),
        artifact=artifact,
    )


SLOW_MODEL = """\
import time
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({seconds})
        return [
            pb_utils.InferenceResponse(
                [pb_utils.Tensor("OUTPUT0", pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy())]
            )
            for r in requests
        ]
"""


def deploy_slow_python(api: Api, tmp_path: Path, *, seconds: float, tenant: str | None = None) -> Deployed:
    """An admin-registered Python model (INPUT0 -> OUTPUT0, FP32 [-1]) that sleeps in execute."""
    spec: dict[str, Any] = {
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}],
        "max_batch_size": 0,
        "instance_group": {"count": 2},
    }
    source = SLOW_MODEL.format(seconds=seconds)
    return deploy_python(api, tmp_path, name="slow", source=source, spec=spec, tenant=tenant)


def deploy_python(
    api: Api, tmp_path: Path, *, name: str, source: str, spec: dict[str, Any], tenant: str | None = None
) -> Deployed:
    """An admin-registered Python-backend model with the given spec and model.py, as `production`."""
    tenant = tenant or api.tenant()
    assert api.create_model(tenant, name=name, format="python", **spec).status_code == 201
    path = tmp_path / f"{unique_name(name)}.py"
    path.write_text(source)
    return upload_and_alias(
        api, tenant=tenant, model=name, artifact=path, consumer=api.key(tenant, "consumer")
    )
