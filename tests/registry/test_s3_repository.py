"""The registration flow with Triton reading its model repository from the S3 server."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
from minio import Minio

from control_plane.db import migrate
from control_plane.modelrepo import build_model_repository
from tests.appfixtures import bucket_objects
from tests.fixtures_triton import S3_ENV, StartTriton
from tests.support import model_files
from tests.support.api import infer_direct


def test_onnx_version_served_from_an_s3_repository(
    start_triton: StartTriton,  # first: stopped after the app, which holds connections to it
    make_api,
    make_settings,
    create_database,
    minio_client: Minio,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    bucket = f"repo-{uuid.uuid4().hex[:12]}"
    location = f"s3://{s3_endpoint}/{bucket}/triton"
    build_model_repository(make_settings(model_repository=location))  # bucket + prefix, before Triton starts
    triton = start_triton(repository=location, env=S3_ENV)
    # Its own registry: the session database's other versions would be placed on this Triton too.
    database_url = create_database()
    migrate.upgrade(database_url)
    api = make_api(database_url=database_url, model_repository=location, triton_urls=[triton.http_url])
    tenant = api.tenant()
    assert api.create_model(tenant, name="m", format="onnx").status_code == 201
    artifact = model_files.onnx_mlp(tmp_path / "m.onnx")

    assert api.upload(tenant, "m", artifact).status_code == 201
    detail = api.wait_settled(tenant, "m", 1)

    assert detail["state"] == "ready", detail
    name = detail["triton_name"]
    assert bucket_objects(minio_client, bucket) == [
        "triton/.control-plane",
        f"triton/{name}/1/model.onnx",
        f"triton/{name}/1/model.py",
        f"triton/{name}/config.pbtxt",
    ]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    expected = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(
        infer_direct(triton.http_url, name, {"x": x})["y"], expected, rtol=1e-5, atol=1e-6
    )
