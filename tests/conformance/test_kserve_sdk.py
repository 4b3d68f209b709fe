"""KServe's own Python SDK (`kserve.InferenceRESTClient` with protocol v2, `kserve.InferenceGRPCClient`), the
client of teams moving from KServe ModelMesh, against the control plane: a second, independent implementation
of the Open Inference Protocol with its own encodings (JSON; binary tensors announced by a lower-case
`inference-header-content-length` and `content-type: application/octet-stream`; gRPC tensors in `contents`
and its own compiled protos), over real uvicorn and the gRPC port in front of the real bundled Triton, checked
against onnxruntime on the same inputs. The SDK runs in a process of its own (kserve_sdk_client says why)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import upload_and_alias
from tests.support.procs import free_port
from tests.support.zoo import run_onnxruntime
from tests.support.zoo_onnx import string_lower
from tests.support.zoo_sklearn import iris, logistic_classifier

ROOT = Path(__file__).resolve().parents[2]
ROWS = iris()[0][::25][:5]  # FP32 [5, 4]
WORDS = np.array([[b"Hello", b"WORLD", b"caf\xc3\xa9 \xc3\x84"]], dtype=object)  # UTF-8, one row


@pytest.fixture
def served(make_served: Callable[..., Api], triton: RunningTriton) -> Api:
    return make_served(grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url])


def _as_json(name: str, value: np.ndarray) -> dict[str, Any]:
    if value.dtype == object:
        return {
            "datatype": "BYTES",
            "shape": list(value.shape),
            "data": [v.decode() for v in value.reshape(-1)],
        }
    return {"datatype": "FP32", "shape": list(value.shape), "data": value.reshape(-1).tolist()}


def _sdk(plan: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.kserve_sdk_client"],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _array(found: dict[str, Any]) -> np.ndarray:
    if found["datatype"] == "BYTES":
        return np.array([v.encode() for v in found["data"]], dtype=object).reshape(found["shape"])
    return np.array(found["data"]).reshape(found["shape"])


def test_the_kserve_sdk_gets_what_onnxruntime_gets_over_rest_and_grpc(served: Api, tmp_path: Path) -> None:
    tenant = served.tenant()
    consumer = served.key(tenant, "consumer")
    models = {
        "iris": (logistic_classifier(tmp_path / "iris.onnx", zipmap=False), {"X": ROWS}),
        "lower": (string_lower(tmp_path / "lower.onnx"), {"text": WORDS}),
    }
    for name, (path, _) in models.items():
        assert served.create_model(tenant, name=name, format="onnx").status_code == 201
        upload_and_alias(served, tenant=tenant, model=name, artifact=path, consumer=consumer)
    plan = {
        "http": str(served.client.base_url),
        "grpc": f"127.0.0.1:{served.settings.grpc_port}",
        "key": consumer,
        "calls": [
            {"model": name, "inputs": {n: _as_json(n, v) for n, v in inputs.items()}}
            for name, (_, inputs) in models.items()
        ],
        "missing": "no-such-model",
        "bad_key": "cp_" + "0" * 40,
    }
    report = _sdk(plan)
    for (name, (path, inputs)), modes in zip(models.items(), report["calls"], strict=True):
        expected = run_onnxruntime(path, inputs)
        for mode, answer in modes.items():
            assert "error" not in answer, (name, mode, answer)
            assert answer["ready"] is True, (name, mode)
            assert answer["model_name"] == name, (name, mode, answer["model_name"])
            assert set(answer["outputs"]) == set(expected), (name, mode)
            for output, want in expected.items():
                got = _array(answer["outputs"][output])
                assert got.shape == want.shape, (name, mode, output)
                if want.dtype == object:
                    assert got.tolist() == want.tolist(), (name, mode, output)
                else:
                    np.testing.assert_allclose(
                        got, want, rtol=1e-5, atol=1e-6, err_msg=f"{name} {mode} {output}"
                    )
    assert report["refusals"] == {
        "rest-missing": 404,
        "grpc-missing": "NOT_FOUND",
        "rest-bad_key": 401,
        "grpc-bad_key": "UNAUTHENTICATED",
    }
