"""`/metrics` as Prometheus' own linter reads it (`promtool check metrics`, from Debian's prometheus package,
which scripts/test unpacks) and Python's Prometheus parser, after HTTP and gRPC inference on two versions
loaded on demand and a refusal; every family carries its help text."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures_triton import RunningTriton
from tests.support.api import Api
from tests.support.deploy import deploy_onnx
from tests.support.procs import free_port
from tests.support.tools import promtool

X = np.array([[0.5, -1.0, 2.0, 0.25]], dtype=np.float32)


def test_metrics_pass_promtool_and_parse_after_traffic(
    make_served: Callable[..., Api], triton: RunningTriton, tmp_path: Path
) -> None:
    served = make_served(grpc_port=free_port(), triton_grpc_urls=[triton.process.grpc_url])
    first = deploy_onnx(served, tmp_path, model="first")
    deploy_onnx(served, tmp_path, model="second", tenant=first.tenant)
    auth = {"Authorization": f"Bearer {first.consumer_key}"}
    with triton_http.InferenceServerClient(served.client.base_url.netloc.decode()) as client:
        tensor = triton_http.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        for model in ("first", "second"):
            client.infer(model, [tensor], headers=dict(auth))
        refused = served.client.post("/v2/models/nope/infer", json={"inputs": []}, headers=auth)
        assert refused.status_code == 404
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{served.settings.grpc_port}") as client:
        tensor = triton_grpc.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        client.infer("first", [tensor], headers={"authorization": auth["Authorization"]})
    text = served.client.get("/metrics", headers=served.headers()).text
    (tmp_path / "metrics.txt").write_text(text)

    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    families = {family.name: family for family in text_string_to_metric_families(text)}
    for name in (
        "cp_inference_requests",
        "cp_inference_request_seconds",
        "cp_residency_hits",
        "cp_reconcile_passes",
    ):
        assert name in families, sorted(families)
    assert all(family.documentation for family in families.values())
    protocols = {s.labels.get("protocol") for s in families["cp_inference_requests"].samples}
    assert {"http", "grpc"} <= protocols, protocols
