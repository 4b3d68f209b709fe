"""Issue 10, acceptance 1: real models from real exporters register through the API, are served by the real
bundled Triton, and answer what onnxruntime / torch answer locally on the same inputs, over HTTP JSON, HTTP
binary (stock tritonclient.http), gRPC (stock tritonclient.grpc) and /v1/predict.

One Triton and one served app for the module; models are registered in batches of BATCH at once (uploads
and loads concurrent), checked, then deleted so that at most BATCH Python-backend stubs are loaded.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

from control_plane.tritonserver import TritonDistribution, TritonProcess
from tests.support import (
    zoo_archives,
    zoo_onnx,
    zoo_sklearn,
    zoo_torch,
    zoo_torchscript,
    zoo_transformers,
)
from tests.support.api import Api
from tests.support.conformance import (
    METADATA,
    PROTOCOLS,
    Clients,
    call,
    difference,
    metadata_difference,
    refused_in_json,
)
from tests.support.served import serve, stack_settings
from tests.support.zoo import Exclusion, Zoo, ZooModel

BATCH = 10
MINIMUM = 60


@dataclass
class Report:
    """Per model and protocol: None when the answer matched, else what went wrong."""

    served: dict[str, dict[str, str | None]] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)
    excluded: list[Exclusion] = field(default_factory=list)
    fp16_json: list[str] = field(default_factory=list)  # models whose JSON requests Triton must refuse
    wall_s: float = 0.0

    def failures(self) -> list[str]:
        """'model over protocol: reason' for every mismatch or error."""
        return [
            f"{model} over {protocol}: {problem}"
            for model, results in self.served.items()
            for protocol, problem in results.items()
            if problem is not None
        ]


def build_zoo(root: Path) -> Zoo:
    """Every model of the suite, built by its exporter, with the framework's outputs."""
    zoo = Zoo(root)
    zoo_onnx.add_helper_models(zoo)
    zoo_archives.add_external_data_models(zoo)
    zoo_torch.add_legacy_exports(zoo)
    zoo_torch.add_dynamo_exports(zoo)
    zoo_torchscript.add_torchscript(zoo)
    zoo_sklearn.add_sklearn_exports(zoo)
    zoo_transformers.add_transformers_exports(zoo)
    return zoo


@pytest.fixture(scope="module")
def report(
    database_url: str,
    s3_endpoint: str,
    triton_distribution: TritonDistribution,
    triton_backend_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Report]:
    """Build, register, serve and compare every model; the report of what matched."""
    started = time.monotonic()
    root = tmp_path_factory.mktemp("conformance")
    (root / "zoo").mkdir()
    zoo = build_zoo(root / "zoo")
    result = Report(
        excluded=list(zoo.excluded),
        families={m.name: m.family for m in zoo.models},
        fp16_json=[m.name for m in zoo.models if refused_in_json(m)],
    )
    process = TritonProcess(
        repository=str(root / "repository"),
        workdir=root / "triton",
        backend_dir=triton_backend_dir,
        distribution=triton_distribution,
    )
    (root / "repository").mkdir()
    process.start(timeout_s=120)
    settings = stack_settings(
        database_url=database_url,
        s3_endpoint=s3_endpoint,
        triton_http_url=process.http_url,
        triton_grpc_url=process.grpc_url,
        repository=root / "repository",
    )
    try:
        with serve(settings) as api:
            _serve_all(api, zoo.models, result, grpc_port=settings.grpc_port)
        result.wall_s = time.monotonic() - started
        yield result
    finally:
        process.stop()


def _serve_all(api: Api, models: list[ZooModel], result: Report, *, grpc_port: int) -> None:
    tenant = api.tenant()
    key = api.key(tenant, "consumer")
    port = api.client.base_url.port
    http = triton_http.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
    grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    clients = Clients(http=http, grpc=grpc, api=api.client, key=key)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for start in range(0, len(models), BATCH):
                batch = models[start : start + BATCH]
                ready = list(pool.map(lambda m: _register(api, tenant, m), batch))
                for model, problem in zip(batch, ready, strict=True):
                    result.served[model.name] = (
                        {p: problem for p in (*PROTOCOLS, *METADATA)} if problem else _check(clients, model)
                    )
                for model in batch:
                    api.client.delete(f"/v1/tenants/{tenant}/models/{model.name}", headers=api.headers())
    finally:
        http.close()
        grpc.close()


def _register(api: Api, tenant: str, model: ZooModel) -> str | None:
    """Create, upload, alias `production` (which waits for the load); None when served, else what failed."""
    created = api.create_model(tenant, name=model.name, format=model.format, **model.spec)
    if created.status_code != 201:
        return f"registration answered {created.status_code}: {created.text[:300]}"
    files = {"file": (model.artifact.name, model.artifact.read_bytes())}
    if model.example is not None:
        files["example"] = (model.example.name, model.example.read_bytes())
    uploaded = api.client.post(
        f"/v1/tenants/{tenant}/models/{model.name}/versions", files=files, headers=api.headers()
    )
    if uploaded.status_code != 201:
        return f"upload answered {uploaded.status_code}: {uploaded.text[:300]}"
    moved = api.client.put(
        f"/v1/tenants/{tenant}/models/{model.name}/aliases/production",
        json={"version": 1},
        headers=api.headers(),
    )
    if moved.status_code == 200:
        return None
    detail = api.version(tenant, model.name, 1)
    state = f"version {detail['state']}: {detail['state_message']}"
    return f"promotion answered {moved.status_code} ({moved.text[:200]}); {state}"


def _check(clients: Clients, model: ZooModel) -> dict[str, str | None]:
    results: dict[str, str | None] = {}
    for protocol in (*PROTOCOLS, *METADATA):
        try:
            if protocol in METADATA:
                results[protocol] = metadata_difference(clients, protocol, model)
            else:
                results[protocol] = difference(model, protocol, call(clients, protocol, model))
        except Exception as exc:  # a refusal or a broken answer: reported per model and protocol
            results[protocol] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return results


def test_every_model_answers_like_its_framework_over_every_protocol(
    report: Report, capsys: pytest.CaptureFixture[str]
) -> None:
    served = [name for name, results in report.served.items() if not any(results.values())]
    with capsys.disabled():
        print(
            f"\nconformance: {len(served)} of {len(report.served)} models served with matching outputs over "
            f"{', '.join(PROTOCOLS)} (metadata names checked over HTTP and gRPC) in {report.wall_s:.1f} s"
        )
        for family, count in sorted(Counter(report.families[name] for name in served).items()):
            print(f"  {count:3d}  {family}")
        for exclusion in report.excluded:
            print(f"  excluded {exclusion.name}: {exclusion.reason}")
        if report.fp16_json:
            print(
                f"  http-json, FP16/BF16 inputs ({', '.join(report.fp16_json)}): not in JSON for Triton; "
                "checked that it is refused with 400 naming the input (binary, gRPC, /v1/predict served)"
            )
    failures = report.failures()
    assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures)
    assert len(served) >= MINIMUM


def test_every_exporter_is_represented(report: Report) -> None:
    families = set(report.families.values())
    for needed in (
        "torch.onnx.export (TorchScript-based, default names)",
        "onnx.helper",
        "onnx.helper (no batch dimension)",
        "onnx.helper (0-d scalar)",
        "onnx.helper (strings)",
        "onnx.helper (optional input with a default)",
        "onnx external data (zip archive)",
        "TorchScript scripted (declared signature)",
    ):
        assert needed in families, needed
    assert "torch.onnx.export (dynamo, the default)" in families
    assert "torch.onnx.export (dynamo, the default; weights in .onnx.data, zipped)" in families
    assert any(f.startswith("TorchScript traced") for f in families)
    assert any(f.startswith("TorchScript scripted (signature from") for f in families)
    assert {f for f in families if f.startswith("skl2onnx")} == {
        zoo_sklearn.REGRESSOR,
        zoo_sklearn.CLASSIFIER,
        zoo_sklearn.CLUSTERING,
        zoo_sklearn.STRINGS,
    }
    assert sum(f in zoo_transformers.FAMILIES for f in report.families.values()) == 3
