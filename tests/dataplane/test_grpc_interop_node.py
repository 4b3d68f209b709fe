"""grpc-js (Node's HTTP/2 and gRPC, an implementation independent of gRPC's C core that tritonclient uses)
against our own HTTP/2 gRPC server: 64 calls at once on one connection, a 1 MiB message each way (flow
control), ModelReady, deadlines (`grpc-timeout`), a client's cancel (RST_STREAM), refusals, a streaming
method we do not serve, and the connection still serving after all of it. Messages are built with
tritonclient's protos here and passed to Node as bytes (tests/interop/grpc_client.js)."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb

from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import deploy_onnx, deploy_slow_python
from tests.support.procs import free_port
from tests.support.zoo import run_onnxruntime

INTEROP = Path(__file__).resolve().parents[1] / "interop"
SERVICE = "/inference.GRPCInferenceService/"
OK, CANCELLED, DEADLINE_EXCEEDED, NOT_FOUND, UNIMPLEMENTED, UNAUTHENTICATED = 0, 1, 4, 5, 12, 16
X = np.arange(12, dtype=np.float32).reshape(3, 4) / 7


@pytest.fixture
def served(make_served: Callable[..., Api], triton: RunningTriton) -> Api:
    return make_served(grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url])


def _node() -> str:
    node = shutil.which("node")
    assert node, "node is not installed (scripts/test installs nodejs)"
    assert (INTEROP / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
        "scripts/test runs npm ci in tests/interop"
    )
    return node


def _infer(model: str, name: str, value: np.ndarray) -> str:
    request = pb.ModelInferRequest(model_name=model, id="node")
    tensor = request.inputs.add(name=name, datatype="FP32", shape=list(value.shape))
    assert tensor is not None
    request.raw_input_contents.append(value.tobytes())
    return base64.b64encode(request.SerializeToString()).decode()


def _outputs(result: dict[str, Any]) -> dict[str, np.ndarray]:
    response = pb.ModelInferResponse.FromString(base64.b64decode(result["body"]))
    return {
        output.name: np.frombuffer(raw, dtype=np.float32).reshape(list(output.shape))
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def _run(port: int, steps: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    done = subprocess.run(
        [_node(), str(INTEROP / "grpc_client.js")],
        input=json.dumps({"target": f"127.0.0.1:{port}", "steps": steps}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return report


def test_grpc_js_calls_get_what_the_model_answers_and_the_connection_survives_deadlines_and_cancels(
    served: Api, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mlp = deploy_onnx(served, tmp_path)
    deploy_slow_python(served, tmp_path, seconds=1.0, tenant=mlp.tenant)
    auth = {"authorization": f"Bearer {mlp.consumer_key}"}
    big = np.random.default_rng(3).standard_normal(1 << 18).astype(np.float32)  # 1 MiB each way
    ready = base64.b64encode(pb.ModelReadyRequest(name="mlp").SerializeToString()).decode()

    def step(id: str, method: str, body: str, **extra: Any) -> dict[str, Any]:
        return {"id": id, "method": SERVICE + method, "body": body, "metadata": auth, **extra}

    steps = [
        step("ready", "ModelReady", ready),
        step("many", "ModelInfer", _infer("mlp", "x", X), repeat=64),
        step("big", "ModelInfer", _infer("slow", "INPUT0", big)),
        step("deadline", "ModelInfer", _infer("slow", "INPUT0", big[:4]), deadline_ms=300),
        step("cancel", "ModelInfer", _infer("slow", "INPUT0", big[:4]), cancel_after_ms=200),
        step("missing", "ModelInfer", _infer("no-such-model", "x", X)),
        step("stream", "ModelStreamInfer", _infer("mlp", "x", X)),
        {
            **step("bad-key", "ModelInfer", _infer("mlp", "x", X)),
            "metadata": {"authorization": "Bearer cp_nope"},
        },
        step("after", "ModelInfer", _infer("mlp", "x", X), repeat=4),
    ]
    started = time.monotonic()
    report = _run(served.settings.grpc_port, steps)
    assert time.monotonic() - started < 60

    assert [r["code"] for r in report["ready"]] == [OK]
    assert pb.ModelReadyResponse.FromString(base64.b64decode(report["ready"][0]["body"])).ready
    expected = run_onnxruntime(mlp.artifact, {"x": X})["y"]
    for result in (*report["many"], *report["after"]):
        assert result["code"] == OK, result
        np.testing.assert_allclose(_outputs(result)["y"], expected, rtol=1e-5, atol=1e-6)
        assert "triton;dur=" in result["trailers"]["server-timing"], result["trailers"]
    assert report["big"][0]["code"] == OK, report["big"][0]["details"]
    np.testing.assert_array_equal(_outputs(report["big"][0])["OUTPUT0"], big)
    assert report["deadline"][0]["code"] == DEADLINE_EXCEEDED, report["deadline"]
    assert report["cancel"][0]["code"] == CANCELLED, report["cancel"]
    assert report["missing"][0]["code"] == NOT_FOUND, report["missing"]
    assert "no-such-model" in report["missing"][0]["details"]
    assert report["stream"][0]["code"] == UNIMPLEMENTED, report["stream"]
    assert report["bad-key"][0]["code"] == UNAUTHENTICATED, report["bad-key"]
    _in_flight_settles(served)
    # A client's deadline or cancel is an everyday end of a call, not a failure of ours to log as one.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def _in_flight_settles(served: Api) -> None:
    """The deadline's and the cancel's calls leave no request counted in flight once Triton answers."""
    deadline = time.monotonic() + 10
    while True:
        text = served.client.get("/metrics", headers=served.headers()).text
        lines = [
            line for line in text.splitlines() if line.startswith('cp_inference_in_flight{protocol="grpc"')
        ]
        if lines and all(float(line.rsplit(" ", 1)[1]) == 0 for line in lines):
            return
        assert time.monotonic() < deadline, lines
        time.sleep(0.2)
